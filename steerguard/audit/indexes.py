"""What a record is indexed and counted under: the same rules for a record just built and one
read back from its stored bytes (the spill file, the rewrite window)."""

from __future__ import annotations

from steerguard.audit.keys import index_suffix
from steerguard.audit.records import DecisionDraft, Draft

# Nearly every record has this outcome: an index of it would list the whole stream, so it is
# not indexed and a query for it reads the stream (see store.py).
UNINDEXED_OUTCOME = "completed"


def indexes_of(record: Draft) -> tuple[str, ...]:
    """Index key suffixes (keys.index_suffix). Every record of a request goes under its user,
    session and uncommon outcome (its decision is looked up in the day's decision hash
    instead: see lua.py), and under its own rules and vector."""
    return request_indexes(record) + own_indexes(record)


def request_indexes(record: Draft) -> tuple[str, ...]:
    """The index keys every record of the record's request shares: user, session, outcome."""
    out: list[str] = []
    if record.user_ref:
        out.append(index_suffix("user", record.user_ref))
    if record.session_id:
        out.append(index_suffix("session", record.session_id))
    if record.outcome.status != UNINDEXED_OUTCOME:
        out.append(index_suffix("outcome", record.outcome.status))
    return tuple(out)


def own_indexes(record: Draft) -> tuple[str, ...]:
    """The record's own index keys: its rules and its vector."""
    if isinstance(record, DecisionDraft):
        rules = sorted({r.rule_id for r in record.rules if r.rule_id})
        return tuple(index_suffix("rule", r) for r in rules)
    out = (index_suffix("rule", record.rule_id),) if record.rule_id else ()
    return (*out, index_suffix("vector", record.vector)) if record.vector else out


def aggregates_of(record: Draft) -> tuple[str, ...]:
    """Aggregate counters the record adds one to: "agg:HH\\0field", the suffix of its UTC
    hour's hash and the field."""
    hour = f"agg:{(record.ts // 3_600_000) % 24:02d}\0"
    if isinstance(record, DecisionDraft):
        closed = (hour + "n:failed_closed",) if record.failed_closed else ()
        return (hour + "n:decision", hour + "o:" + record.outcome.status, *closed,
                *(hour + "r:" + r.rule_id for r in record.rules))
    return (hour + "n:intervention", hour + "v:" + record.vector)
