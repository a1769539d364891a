"""Query parameters of the audit API and the dashboard, validated at the boundary: an
invalid one is a 400 naming it, never a half-run query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Ids and names as the writer indexes them; anything else cannot match a record.
_TEXT = Field(default=None, min_length=1, max_length=200)
_EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)  # a day of slack for the range arithmetic
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)
MAX_LIMIT = 500
MAX_RANGE_DAYS = 31
VERIFY_MAX_DAYS = 7


class Limits(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_limit: int = Field(default=MAX_LIMIT, ge=1)
    max_range_days: int = Field(default=MAX_RANGE_DAYS, ge=1)
    verify_max_days: int = Field(default=VERIFY_MAX_DAYS, ge=1)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class TimeRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: datetime | None = None
    until: datetime | None = None

    @field_validator("since", "until", mode="before")
    @classmethod
    def _blank(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        value = _aware(value)
        if value is not None and not _EARLIEST <= value <= _LATEST:
            raise ValueError(f"must be between {_EARLIEST:%Y-%m-%d} and {_LATEST:%Y-%m-%d} "
                             "(records carry milliseconds since 1970, UTC)")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if self.since and self.until and self.since > self.until:
            raise ValueError("since must not be after until")
        return self

    def bounded(self, max_days: int, default_days: int | None = None
                ) -> tuple[datetime, datetime]:
        """(since, until) with `until` defaulting to now and `since` to `default_days`
        (else `max_days`) before it; a longer range is refused."""
        until = self.until or datetime.now(UTC)
        since = self.since or until - timedelta(days=default_days or max_days)
        if until - since > timedelta(days=max_days):
            raise ValueError(f"the time range from since to until is "
                             f"{(until - since).total_seconds() / 86400:.1f} days; at most "
                             f"{max_days} days may be asked at once")
        return since, until


class RecordFilters(TimeRange):
    user: str | None = _TEXT
    user_ref: str | None = _TEXT
    session: str | None = _TEXT
    decision: str | None = _TEXT
    rule: str | None = _TEXT
    vector: str | None = _TEXT
    outcome: Literal["completed", "error", "cancelled"] | None = None
    kind: Literal["decision", "intervention"] | None = None
    limit: int = Field(default=100, ge=1)
    cursor: str | None = Field(default=None, min_length=1, max_length=1000)

    @field_validator("user", "user_ref", "session", "decision", "rule", "vector", "outcome",
                     "kind", "cursor", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    def query_args(self) -> dict[str, str | None]:
        return {"user": self.user, "user_ref": self.user_ref, "session": self.session,
                "decision": self.decision, "rule": self.rule, "vector": self.vector,
                "outcome": self.outcome, "kind": self.kind}

    def url_state(self) -> dict[str, str]:
        """The filters as query parameters (empty ones left out): what a shared link holds."""
        out = {k: v for k, v in self.query_args().items() if v}
        for name in ("since", "until"):
            value: datetime | None = getattr(self, name)
            if value is not None:  # as a datetime-local input shows it, in UTC
                out[name] = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return out


class StatsQuery(TimeRange):
    bucket: Literal["hour", "day"] = "hour"


class ExportQuery(TimeRange):
    format: Literal["jsonl", "csv"] = "jsonl"
