"""A record sealed into its chain: its bytes and hash, and what the batch script needs to
write it (day, decision, index keys, aggregate fields)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from steerguard.audit.chain import ChainHead
from steerguard.audit.indexes import aggregates_of, indexes_of, own_indexes, request_indexes
from steerguard.audit.keys import day_of
from steerguard.audit.records import Draft, parse_record


@dataclass(slots=True)
class Sealed:
    """A record with its place in the chain fixed: what goes to Redis or the spill file."""

    payload: bytes
    hash: str
    chain: str
    seq: int
    ts: int
    day: str
    decision: str
    indexes: tuple[str, ...]
    aggs: tuple[str, ...]  # "agg:HH\0field"

    @classmethod
    def seal(cls, head: ChainHead, draft: Draft) -> Sealed:
        """`draft` as the next record of `head`'s chain."""
        payload, digest = head.seal(_body(draft))
        return cls._of(draft, head.chain_id, head.seq, payload, digest)

    @classmethod
    def seal_request(cls, head: ChainHead, drafts: Sequence[Draft]) -> list[Sealed]:
        """The drafts of one request as the next records of `head`'s chain, with what they
        share (day, user, session and outcome index keys) worked out once."""
        if not drafts:
            return []
        first = drafts[0]
        day, shared = day_of(first.ts), request_indexes(first)
        out = []
        for draft in drafts:
            payload, digest = head.seal(_body(draft))
            out.append(cls(payload, digest, head.chain_id, head.seq, draft.ts, day,
                           draft.decision_id, shared + own_indexes(draft),
                           aggregates_of(draft)))
        return out

    @classmethod
    def read(cls, digest: str, payload: bytes) -> Sealed:
        """A record read back from its stored bytes (the spill file, the rewrite window)."""
        record = parse_record(payload)
        return cls._of(record, record.chain, record.seq, payload, digest)

    @classmethod
    def _of(cls, record: Draft, chain: str, seq: int, payload: bytes, digest: str) -> Sealed:
        return cls(payload, digest, chain, seq, record.ts, day_of(record.ts),
                   record.decision_id, indexes_of(record), aggregates_of(record))


def _body(draft: Draft) -> dict[str, Any]:
    """The draft's JSON values, as model_dump(mode="json") gives them, without its argument
    handling (0.5 us a record)."""
    body: dict[str, Any] = draft.__pydantic_serializer__.to_python(draft, mode="json")
    return body
