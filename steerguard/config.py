"""One configuration for the whole system: defaults, then a YAML file, then STEERGUARD_*
environment variables, then arguments. The composition root (steerguard.root) builds
everything from it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from steerguard.audit.config import AuditConfig
from steerguard.errors import SteerguardError
from steerguard.inputfiles import InputFileError, load_yaml
from steerguard.runtime.bundled import BUNDLED

Backend = Literal["hf", "vllm"]

ENV_FILE = "STEERGUARD_CONFIG"
# Environment variable -> field. The audit section reads its own (steerguard.audit.config).
ENV_FIELDS = {
    "STEERGUARD_MODEL": "model",
    "STEERGUARD_BACKEND": "backend",
    "STEERGUARD_BUNDLE": "bundle",
    "STEERGUARD_CONCEPTS": "concepts",
}
_OWN_SECTIONS = ("audit",)


class ConfigError(SteerguardError):
    """The configuration file or environment holds a value steerguard cannot use."""


class ServerConfig(BaseModel):
    """`steerguard serve`: where it listens, who may call it, and how much it takes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(default="127.0.0.1", description="Interface to bind; without API keys "
                      "only a loopback address is allowed.")
    port: int = Field(default=8000, ge=0, le=65535, description="0: any free port.")
    keys_file: Path | None = Field(
        default=None, description="API keys (hashed) and their scopes; see steerguard.server.keys."
    )
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="Larger bodies get 413.")
    max_tokens: int = Field(default=1024, ge=1, description="Cap on max_tokens per request.")
    default_max_tokens: int = Field(default=256, ge=1)
    max_batch: int = Field(default=16, ge=1, description="Rows decoded together at most.")
    max_queue: int = Field(default=64, ge=0, description="Requests waiting for a row; beyond "
                           "it the server answers 429 with Retry-After.")
    scheduler: Literal["batching", "threads"] = Field(
        default="batching", description="batching: concurrent requests share decode steps; "
        "threads: each request generates alone (for backends that batch themselves).",
    )
    request_timeout_s: float | None = Field(default=300.0, gt=0)
    max_string_chars: int = Field(default=96, ge=1, description="Cap on free JSON strings in "
                                  "constrained output (forced calls, JSON schema answers).")
    max_array_items: int = Field(default=16, ge=1)


class SteerguardConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(
        default=BUNDLED,
        description="Model spec: 'smollm2-135m' (bundled), a local directory or a hub id.",
    )
    backend: Backend = Field(default="hf", description="hf: in-process transformers; vllm.")
    bundle: Path | None = Field(
        default=None, description="Policy bundle folder or file; None: the shipped bundle."
    )
    watch_bundle_s: float | None = Field(
        default=None, gt=0,
        description="Poll the bundle file every this many seconds and reload it when it "
        "changes (a bad revision never replaces the good one); None: load once.",
    )
    concepts: Path | None = Field(
        default=None,
        description="Concept datasets the engine builds vectors from when none are stored for "
        "the model; None: the shipped concepts.",
    )
    audit_enabled: bool = Field(default=True, description="False: no audit records at all.")
    audit: AuditConfig = Field(default_factory=AuditConfig.load)
    server: ServerConfig = Field(default_factory=ServerConfig)

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> SteerguardConfig:
        """Read `path` (else $STEERGUARD_CONFIG, if set), then the environment, then
        `overrides`; each later source wins."""
        path = path if path is not None else os.environ.get(ENV_FILE) or None
        values: dict[str, Any] = _read(Path(path)) if path is not None else {}
        values.pop("audit", None)  # AuditConfig reads its section and environment itself
        for env, name in ENV_FIELDS.items():
            if os.environ.get(env):
                values[name] = os.environ[env]
        values.update(overrides)
        where = f"config {path}" if path is not None else "configuration"
        if "audit" not in values:
            values["audit"] = AuditConfig.load(Path(path) if path is not None else None)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"{where}: {problems}") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(path)  # bounded: size, aliases, depth, duplicate keys, encoding
    except InputFileError as exc:
        raise ConfigError(f"config {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping of settings at the top level")
    known = set(SteerguardConfig.model_fields) | set(_OWN_SECTIONS)
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(
            f"config {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return dict(data)
