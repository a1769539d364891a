"""Who may read the audit log: API keys with the `audit:read` scope (a bearer token on the
API; exchanged for an HttpOnly session cookie on the dashboard), or, with no keys
configured, loopback clients only. Sign-in and sign-out forms carry CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import yaml
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from steerguard.oversight.problems import OversightProblem

SCOPE = "audit:read"
SESSION_COOKIE = "sg_session"
CSRF_COOKIE = "sg_csrf"
COOKIE_PATH = "/dashboard"


class KeyChecker(Protocol):
    """What oversight needs from the server's key store."""

    @property
    def configured(self) -> bool:
        """False: no keys at all (loopback-only mode)."""
        ...

    def lookup(self, key: str) -> tuple[str, frozenset[str]] | None:
        """The key's name and scopes, or None when it is not a key."""
        ...


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scopes: frozenset[str]
    via: Literal["key", "session", "loopback"]


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=80)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    key: str | None = Field(default=None, min_length=16)
    scopes: tuple[str, ...] = (SCOPE,)

    @model_validator(mode="after")
    def _one_secret(self) -> KeyEntry:
        if (self.sha256 is None) == (self.key is None):
            raise ValueError("give exactly one of sha256 (hex SHA-256 of the key) and key")
        return self


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[KeyEntry]


class HashedKeys:
    """Keys kept as SHA-256 digests, compared in constant time."""

    def __init__(self, entries: list[KeyEntry]) -> None:
        self._entries = [
            (e.name, bytes.fromhex(e.sha256) if e.sha256 else _digest(e.key or ""),
             frozenset(e.scopes))
            for e in entries
        ]

    @classmethod
    def from_file(cls, path: Path) -> HashedKeys:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"keys file {path}: cannot read it: {exc}") from None
        try:
            return cls(KeysFile.model_validate(data).keys)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(x) for x in err["loc"]) or "top level"
            raise ValueError(f"keys file {path}: {where}: {err['msg']}; expected "
                             "keys: [{name, sha256 or key, scopes}]") from None

    @property
    def configured(self) -> bool:
        return bool(self._entries)

    def lookup(self, key: str) -> tuple[str, frozenset[str]] | None:
        digest = _digest(key)
        found = None
        for name, want, scopes in self._entries:  # every entry: no early exit to time
            if hmac.compare_digest(digest, want):
                found = (name, scopes)
        return found


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(slots=True)
class Session:
    token: str
    principal: Principal
    csrf: str
    expires: float
    created: float = field(default_factory=time.time)


def is_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Access:
    def __init__(self, keys: KeyChecker | None = None, *, session_ttl_s: float = 8 * 3600,
                 max_sessions: int = 10_000) -> None:
        self.keys = keys
        self.session_ttl_s = session_ttl_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def open_mode(self) -> bool:
        """No keys configured: loopback clients read without signing in."""
        return self.keys is None or not self.keys.configured

    # ---- the API: a bearer key per request --------------------------------------------
    def api(self, request: Request, scope: str = SCOPE) -> Principal:
        if self.open_mode:
            return self._loopback(request)
        header = request.headers.get("authorization", "")
        kind, _, key = header.partition(" ")
        if kind.lower() != "bearer" or not key.strip():
            raise OversightProblem(
                401, "Unauthorized", "Authorization: send 'Bearer <API key>' with a key that "
                f"has the {scope} scope", headers={"WWW-Authenticate": "Bearer"})
        found = self.keys.lookup(key.strip()) if self.keys else None
        if found is None:
            raise OversightProblem(401, "Unauthorized", "Authorization: not a known API key",
                                   headers={"WWW-Authenticate": "Bearer"})
        name, scopes = found
        if scope not in scopes:
            raise OversightProblem(403, "Forbidden",
                                   f"key {name!r} lacks the {scope} scope")
        return Principal(name, scopes, "key")

    def _loopback(self, request: Request) -> Principal:
        if not is_loopback(request):
            raise OversightProblem(403, "Forbidden", "no API keys are configured: the audit "
                                   "API and dashboard answer loopback clients only")
        return Principal("loopback", frozenset({SCOPE}), "loopback")

    # ---- the dashboard: a session cookie ----------------------------------------------
    def page(self, request: Request) -> Principal | None:
        """The signed-in principal, or None (sign in first). Raises 403 for a loopback-only
        server seen from elsewhere."""
        if self.open_mode:
            return self._loopback(request)
        session = self.session(request)
        return session.principal if session else None

    def session(self, request: Request) -> Session | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        with self._lock:
            s = self._sessions.get(token)
            if s is None:
                return None
            if s.expires < time.time():
                del self._sessions[token]
                return None
            return s

    def sign_in(self, key: str) -> Session | Principal:
        """A new session for a key with the scope; the Principal alone when the key is
        known but lacks it (nothing is stored then). Raises for an unknown key."""
        found = self.keys.lookup(key) if self.keys else None
        if found is None:
            raise OversightProblem(401, "Unauthorized", "api_key: not a known API key")
        name, scopes = found
        principal = Principal(name, scopes, "session")
        if SCOPE not in scopes:
            return principal
        now = time.time()
        s = Session(secrets.token_urlsafe(32), principal, secrets.token_urlsafe(24),
                    now + self.session_ttl_s)
        with self._lock:
            self._sessions[s.token] = s
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return s

    def sign_out(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    @property
    def session_count(self) -> int:
        return len(self._sessions)


def same_token(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))
