"""Audit settings: defaults, a YAML file's `audit:` section, then STEERGUARD_* environment."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from steerguard.audit.errors import AuditConfigError
from steerguard.home import steerguard_home

# The rewrite window's defaults (recent.py): a killed server loses up to about two seconds;
# 4096 records hold that at 2k records/s, in about 5 MB.
REWRITE_WINDOW_S = 10.0
REWRITE_WINDOW_RECORDS = 4096

OverflowPolicy = Literal["buffer", "block", "refuse"]

# Environment variable -> field. Env wins over the file, the file over defaults.
ENV_FIELDS = {
    "STEERGUARD_REDIS_URL": "redis_url",
    "STEERGUARD_REDIS_READER_URL": "reader_url",
    "STEERGUARD_REDIS_CLUSTER": "cluster",
    "STEERGUARD_AUDIT_PREFIX": "key_prefix",
    "STEERGUARD_AUDIT_OVERFLOW": "overflow",
    "STEERGUARD_AUDIT_SPILL_PATH": "spill_path",
    "STEERGUARD_AUDIT_CHECKPOINT_PATH": "checkpoint_path",
    "STEERGUARD_AUDIT_HMAC_KEY": "user_hmac_key",
    "STEERGUARD_AUDIT_STORE_USER_ID": "store_user_id",
    "STEERGUARD_AUDIT_STORE_TEXT": "store_text",
    "STEERGUARD_AUDIT_RETENTION_DAYS": "retention_days",
}


# Node URLs in one setting are separated by commas. A comma inside a URL (a password's) is
# not followed by a scheme, so it does not split.
_NODE_SEPARATOR = re.compile(r"\s*,\s*(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def node_urls(value: str) -> list[str]:
    """The node URLs of a `redis_url` or `reader_url` setting: one, or several (comma-separated,
    each a whole URL) naming startup nodes of a Redis Cluster."""
    return _NODE_SEPARATOR.split(value.strip(" \t\n,"))


def setting_name(field: str) -> str:
    """A field as the user sets it: `redis_url (STEERGUARD_REDIS_URL)`."""
    env = next((e for e, f in ENV_FIELDS.items() if f == field), None)
    return f"{field} ({env})" if env else field


class MaskRule(BaseModel):
    """A regular expression whose matches are replaced before text is stored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    pattern: str
    replacement: str = "[MASKED]"
    requires: str | None = Field(
        default=None, min_length=1,
        description="Text every match contains (say '@' for e-mail addresses): text without it "
        "skips the rule, for the price of a substring test instead of a regex scan.",
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"mask pattern {value!r} does not compile: {exc}") from exc
        return value


DEFAULT_MASKS = (
    # Both run over every decision's explanation (and, with store_text, whole prompts and
    # answers), so they are written to scan in linear time and skip fast (docs/audit.md,
    # mask rules). The e-mail rule's lookbehind starts a match only where a run of address
    # characters starts (without it a 2,000-letter word took 15 ms, now 0.02); the number
    # rule starts with a digit, which lets the engine jump from digit to digit. Their matches
    # are those of the plain patterns, [\w.+-]+@[\w-]+\.[\w.-]+ and \b(?:\d[ -]?){9,}\d\b.
    MaskRule(name="email", pattern=r"(?<![\w.+-])[\w.+-]+@[\w-]+\.[\w.-]+",
             replacement="[EMAIL]", requires="@"),
    MaskRule(name="long_number", pattern=r"\d(?<!\w\d)(?:[ -]?\d){9,}(?!\w)",
             replacement="[NUMBER]"),
)


class AuditConfig(BaseModel):
    # The input holds secrets (passwords in URLs, the HMAC key): errors name the field and
    # what was expected, never the value given.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    redis_url: str | None = Field(
        default=None,
        description="redis:// or rediss:// URL (credentials, TLS); None = embedded. With "
        "`cluster`, several node URLs (comma-separated, or a YAML list) are startup nodes.",
    )
    reader_url: str | None = Field(
        default=None,
        description="URL for queries and verify (e.g. as the ACL user `reader`) when the writer's "
        "credentials may not read; None = redis_url. Several, as redis_url, with `cluster`.",
    )
    cluster: bool = Field(
        default=False,
        description="redis_url (and reader_url) name nodes of a Redis Cluster: connect with "
        "RedisCluster, which reads the slot map from the first node that answers. Needs "
        "redis_url; the embedded server is never a cluster.",
    )
    key_prefix: str = Field(default="sg", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    home: Path = Field(default_factory=steerguard_home)
    spill_path: Path | None = None
    spill_max_bytes: int = Field(default=1 << 30, ge=0)
    spill_fsync: bool = True
    checkpoint_path: Path | None = None
    checkpoint_interval_s: float = Field(default=60.0, gt=0)
    overflow: OverflowPolicy = "buffer"
    max_queue: int = Field(default=100_000, ge=1)
    block_timeout_s: float = Field(default=5.0, ge=0)
    batch_size: int = Field(default=512, ge=1, le=2000)
    retry_initial_s: float = Field(default=0.05, gt=0)
    retry_max_s: float = Field(default=2.0, gt=0)
    socket_timeout_s: float = Field(default=2.0, gt=0)
    rewrite_window_s: float = Field(
        default=REWRITE_WINDOW_S, ge=0,
        description="How long the writer keeps records Redis acknowledged, to write them again "
        "if the server loses them (a killed server with appendfsync everysec can lose the "
        "last two seconds; one without persistence, everything).",
    )
    rewrite_window_records: int = Field(default=REWRITE_WINDOW_RECORDS, ge=0,
                                        description="At most this many records are kept so.")
    store_user_id: bool = False
    user_hmac_key: SecretStr | None = None
    store_text: bool = False
    mask_rules: tuple[MaskRule, ...] = DEFAULT_MASKS
    retention_days: int = Field(default=30, ge=1)

    @field_validator("redis_url", "reader_url", mode="before")
    @classmethod
    def _node_list(cls, value: object) -> object:
        """A YAML list of node URLs is the comma-separated form."""
        if not isinstance(value, list | tuple):
            return value
        if not value or not all(isinstance(v, str) and v.strip() for v in value):
            raise ValueError("a list of node URLs must hold one or more URLs (strings)")
        return ",".join(v.strip() for v in value)

    @property
    def audit_dir(self) -> Path:
        return self.home / "audit"

    @property
    def embedded_dir(self) -> Path:
        return self.home / "valkey"

    @property
    def resolved_spill_path(self) -> Path:
        return self.spill_path or self.audit_dir / f"spill-{self.key_prefix}.jsonl"

    @property
    def resolved_checkpoint_path(self) -> Path:
        return self.checkpoint_path or self.audit_dir / f"checkpoints-{self.key_prefix}.jsonl"

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> AuditConfig:
        """Read the `audit:` section of a YAML file (if given), then environment, then overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            try:
                data = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise AuditConfigError(f"cannot read audit config {path}: {exc}") from exc
            section = data.get("audit", {}) if isinstance(data, dict) else None
            if not isinstance(section, dict):
                raise AuditConfigError(f"{path}: 'audit' must be a mapping")
            values.update(section)
        for env, field in ENV_FIELDS.items():
            if env in os.environ:
                values[field] = os.environ[env]
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise AuditConfigError(f"invalid audit config: {exc}") from exc
