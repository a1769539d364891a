"""API keys: who may call the server, and for what.

Keys come from a YAML/JSON file (`server.keys_file`) or the environment (STEERGUARD_API_KEYS),
are kept only as SHA-256 hashes, and are compared in constant time. Each key has scopes:

  chat        chat completions with the policy's decision
  steer       explicit plans in the request (policy authors trying vectors); audited as such
  audit:read  the oversight API
  admin       everything

A keys file:

    keys:
      - name: support-agent
        sha256: 5e884898da28...   # `steerguard serve --hash-key KEY` prints it
        scopes: [chat]
      - name: policy-author
        sha256: ...
        scopes: [chat, steer, audit:read]

STEERGUARD_API_KEYS holds `name:key:scope+scope` entries separated by commas (the keys in
clear, hashed on load; for containers and tests).

With no keys at all the server runs without authentication, binds loopback only, and every
caller has every scope.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from steerguard.errors import SteerguardError
from steerguard.server.errors import ApiError

Scope = Literal["chat", "steer", "audit:read", "admin"]
SCOPES: tuple[Scope, ...] = ("chat", "steer", "audit:read", "admin")
ENV_KEYS = "STEERGUARD_API_KEYS"
ENV_KEYS_FILE = "STEERGUARD_API_KEYS_FILE"


class KeysError(SteerguardError):
    """The keys file or environment holds an entry the server cannot use."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key")
    scopes: tuple[Scope, ...] = Field(min_length=1)


class _KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[KeyEntry]


@dataclass(frozen=True)
class Principal:
    """The caller: the key's name (never the key) and what it may do."""

    name: str
    scopes: frozenset[str]
    authenticated: bool = True

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


ANONYMOUS = Principal("anonymous", frozenset(SCOPES), authenticated=False)


class KeyRing:
    """Hashed keys; `lookup` compares against every entry so timing says nothing."""

    def __init__(self, entries: Iterable[KeyEntry] = ()) -> None:
        self.entries = tuple(entries)
        names = [e.name for e in self.entries]
        duplicate = sorted({n for n in names if names.count(n) > 1})
        if duplicate:
            raise KeysError(f"api keys: duplicate key name(s) {', '.join(duplicate)}")

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    def lookup(self, key: str) -> Principal | None:
        presented = hash_key(key).encode()
        found: KeyEntry | None = None
        for entry in self.entries:
            if hmac.compare_digest(presented, entry.sha256.encode()):
                found = entry
        return Principal(found.name, frozenset(found.scopes)) if found is not None else None

    # loading ----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | None = None, env: Mapping[str, str] | None = None) -> KeyRing:
        """Keys from `path` (else $STEERGUARD_API_KEYS_FILE) plus $STEERGUARD_API_KEYS."""
        env = os.environ if env is None else env
        entries: list[KeyEntry] = []
        file = path or (Path(env[ENV_KEYS_FILE]) if env.get(ENV_KEYS_FILE) else None)
        if file is not None:
            entries += cls._read_file(file)
        if env.get(ENV_KEYS):
            entries += cls._parse_env(env[ENV_KEYS])
        return cls(entries)

    @staticmethod
    def _read_file(path: Path) -> list[KeyEntry]:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KeysError(f"cannot read keys file {path}: {exc.strerror or exc}") from None
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise KeysError(f"keys file {path} does not parse: {exc}") from None
        try:
            return _KeysFile.model_validate(data).keys
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'top level'}: {e['msg']}" for e in exc.errors()
            )
            raise KeysError(
                f"keys file {path}: {problems} (expected `keys:` a list of name, sha256, "
                f"scopes from {', '.join(SCOPES)})"
            ) from None

    @staticmethod
    def _parse_env(value: str) -> list[KeyEntry]:
        out: list[KeyEntry] = []
        for n, item in enumerate(p.strip() for p in value.split(",") if p.strip()):
            parts = item.split(":")
            if len(parts) < 3:
                raise KeysError(
                    f"{ENV_KEYS} entry {n + 1}: expected name:key:scope+scope, got "
                    f"{len(parts)} part(s)"
                )
            # A scope may contain ':' (audit:read): the name is first, the key second.
            name, key, scopes = parts[0], parts[1], ":".join(parts[2:])
            if not key:
                raise KeysError(f"{ENV_KEYS} entry {n + 1} ({name}): the key is empty")
            try:
                out.append(KeyEntry(name=name, sha256=hash_key(key),
                                    scopes=tuple(s for s in scopes.split("+") if s)))
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                     for e in exc.errors())
                raise KeysError(f"{ENV_KEYS} entry {n + 1} ({name}): {problems}") from None
        return out


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def principal(request: Request) -> Principal:
    """The caller of this request (a FastAPI dependency): 401 without a valid key."""
    ring: KeyRing = request.app.state.keys
    if not ring.enabled:
        return ANONYMOUS
    key = bearer(request)
    if key is None:
        raise ApiError(401, "missing API key", "send `Authorization: Bearer <key>`",
                       field="Authorization", headers={"WWW-Authenticate": "Bearer"})
    found = ring.lookup(key)
    if found is None:
        raise ApiError(401, "unknown API key", "the key matches none configured",
                       field="Authorization", headers={"WWW-Authenticate": "Bearer"})
    return found


def require_scope(scope: Scope) -> Callable[[Principal], Principal]:
    """A dependency that admits keys with `scope` (or admin), 403 for others:

        @router.get("/v1/audit/records")
        def records(who: Principal = Depends(require_scope("audit:read"))): ...
    """

    def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.allows(scope):
            raise ApiError(403, "scope missing",
                           f"key {who.name!r} lacks scope {scope!r} (it has "
                           f"{', '.join(sorted(who.scopes))})", field="Authorization")
        return who

    return check
