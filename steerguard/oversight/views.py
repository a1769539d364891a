"""What the pages show, computed from records and stats: plain data for the templates and
the charts (the templates escape it; the charts get it as JSON)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from steerguard.audit.records import DecisionRecord, InterventionRecord
from steerguard.audit.store import Stats

Record = DecisionRecord | InterventionRecord
_TOP = 8  # series per chart; the rest are summed as "other"


def bucket_starts(since: datetime, until: datetime, bucket: str) -> list[datetime]:
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    t = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        t = t.replace(hour=0)
    out = []
    while t <= until:
        out.append(t)
        t += step
    return out


def _series(names: list[str], rows: list[dict[str, int]]) -> list[dict[str, Any]]:
    return [{"label": n, "values": [r.get(n, 0) for r in rows]} for n in names]


def _top(counts: dict[str, int]) -> list[str]:
    return [k for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:_TOP]]


def overview_charts(stats: Stats, since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Three charts over the same time axis: decisions by outcome, interventions by vector,
    decisions by rule (every bucket present, empty ones as 0)."""
    starts = bucket_starts(since, until, stats.bucket)
    by_start = {b.start: b for b in stats.buckets}
    rows = [by_start.get(s) for s in starts]
    x = [int(s.timestamp()) for s in starts]
    outcomes = [{**(b.outcomes if b else {})} for b in rows]
    vectors = [{**(b.vectors if b else {})} for b in rows]
    rules = [{**(b.rules if b else {})} for b in rows]
    decisions = [{"decisions": b.decisions if b else 0,
                  "failed closed": b.failed_closed if b else 0} for b in rows]
    return [
        {"id": "chart-decisions", "title": "Decisions by outcome", "x": x,
         "series": _series(["completed", "error", "cancelled"], outcomes)
         + _series(["failed closed"], decisions)},
        {"id": "chart-vectors", "title": "Interventions by vector", "x": x,
         "series": _series(_top(stats.total.vectors), vectors)},
        {"id": "chart-rules", "title": "Decisions by matched rule", "x": x,
         "series": _series(_top(stats.total.rules), rules)},
    ]


def layer_chart(rec: InterventionRecord) -> dict[str, Any] | None:
    """Per-layer measurements of one intervention: x is the layer."""
    if not rec.measurements:
        return None
    ms = sorted(rec.measurements, key=lambda m: m.layer)
    return {"id": f"chart-iv-{rec.index}", "title": f"{rec.vector}: per layer",
            "x": [m.layer for m in ms], "xlabel": "layer",
            "series": [
                {"label": "delta norm", "values": [round(m.delta_norm, 5) for m in ms]},
                {"label": "projection before", "values": [round(m.projection_before, 5)
                                                          for m in ms]},
                {"label": "projection after", "values": [round(m.projection_after, 5)
                                                         for m in ms]},
            ]}


@dataclass
class DecisionGroup:
    """One decision of a session or user: its record and its interventions."""

    decision_id: str
    ts: int
    decision: DecisionRecord | None = None
    interventions: list[InterventionRecord] = field(default_factory=list)

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.ts / 1000, UTC)

    @property
    def outcome(self) -> str:
        rec = self.decision or (self.interventions[0] if self.interventions else None)
        return rec.outcome.status if rec else ""


def group(records: list[Record]) -> list[DecisionGroup]:
    groups: dict[str, DecisionGroup] = {}
    for rec in records:
        g = groups.get(rec.decision_id)
        if g is None:
            g = groups[rec.decision_id] = DecisionGroup(rec.decision_id, rec.ts)
        if isinstance(rec, DecisionRecord):
            g.decision = rec
        else:
            g.interventions.append(rec)
    return sorted(groups.values(), key=lambda g: g.ts)


@dataclass
class UserSummary:
    records: int = 0
    decisions: int = 0
    interventions: int = 0
    first: datetime | None = None
    last: datetime | None = None
    outcomes: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    vectors: Counter[str] = field(default_factory=Counter)
    failed_closed: int = 0
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)


def summarize(records: list[Record]) -> UserSummary:
    s = UserSummary()
    for rec in records:
        s.records += 1
        s.first = rec.time if s.first is None else min(s.first, rec.time)
        s.last = rec.time if s.last is None else max(s.last, rec.time)
        sess = s.sessions.setdefault(rec.session_id or "", {"decisions": 0,
                                                             "interventions": 0,
                                                             "first": rec.time,
                                                             "last": rec.time})
        sess["last"] = max(sess["last"], rec.time)
        if isinstance(rec, DecisionRecord):
            s.decisions += 1
            sess["decisions"] += 1
            s.outcomes[rec.outcome.status] += 1
            s.rules.update(r.rule_id for r in rec.rules)
            s.failed_closed += rec.failed_closed
        else:
            s.interventions += 1
            sess["interventions"] += 1
            s.vectors[rec.vector] += 1
    return s
