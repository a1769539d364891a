"""Key names. All keys of one UTC day share the hash tag `{YYYYMMDD}`, so the batch script and a
day's deletion touch one Redis Cluster slot. The user index lives under `:u:` so ACL key
patterns can make it write-only for the writer (see docs/audit.md)."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta

from steerguard.canonical import digest

_SAFE = re.compile(r"^[A-Za-z0-9._@/+=-]{1,80}$")

# Sorted-set index kinds: one letter each in the key, the field name in query(). Decisions
# are not among them: one hash per day maps each decision to its records' stream ids.
INDEX_KINDS = {"user": "u", "session": "s", "rule": "r", "vector": "v", "outcome": "o"}


def safe_value(value: str) -> str:
    """Index values go into key names; odd or long ones are replaced by a hash."""
    if _SAFE.match(value):
        return value
    return "h." + digest(value, size=32)


DECISIONS = "dec"  # suffix of the day's decision hash: decision id -> its records' ids


def day_of(ts_ms: int) -> str:
    return time.strftime("%Y%m%d", time.gmtime(ts_ms // 1000))


def day_start_ms(day: str) -> int:
    d = datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC)
    return int(d.timestamp() * 1000)


def days_between(since_ms: int, until_ms: int) -> list[str]:
    first = datetime.fromtimestamp(since_ms / 1000, UTC).date()
    last = datetime.fromtimestamp(until_ms / 1000, UTC).date()
    out: list[str] = []
    d: date = first
    while d <= last:
        out.append(d.strftime("%Y%m%d"))
        d += timedelta(days=1)
    return out


class KeySpace:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def tag(self, day: str) -> str:
        """Common start of every key of one day; the script appends the rest."""
        return f"{self.prefix}:{{{day}}}:"

    def stream(self, day: str) -> str:
        return self.tag(day) + "log"

    def head(self, day: str) -> str:
        return self.tag(day) + "head"

    def index(self, day: str, kind: str, value: str) -> str:
        return self.tag(day) + index_suffix(kind, value)

    def decisions(self, day: str) -> str:
        return self.tag(day) + DECISIONS

    def agg(self, day: str, hour: int) -> str:
        return self.tag(day) + f"agg:{hour:02d}"

    @property
    def days(self) -> str:
        return f"{self.prefix}:days"

    @property
    def anchors(self) -> str:
        return f"{self.prefix}:anchors"

    def day_pattern(self, day: str) -> str:
        return f"{self.prefix}:{{{day}}}:*"


def index_suffix(kind: str, value: str) -> str:
    return f"{INDEX_KINDS[kind]}:{safe_value(value)}"
