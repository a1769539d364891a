"""A record sealed into its chain: its bytes and hash, and what the batch script needs to
write it (day, decision, index keys, aggregate fields)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from steerguard.audit.build import Draft, draft_of
from steerguard.audit.keys import day_of


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
    def of(cls, draft: Draft, payload: bytes, digest: str) -> Sealed:
        """`draft` once sealed (its body carries chain and seq)."""
        body = draft.body
        ts = body["ts"]
        return cls(payload, digest, body["chain"], body["seq"], ts, day_of(ts),
                   body["decision_id"], draft.indexes, draft.aggs)

    @classmethod
    def read(cls, digest: str, payload: bytes) -> Sealed:
        """A record read back from its stored bytes (the spill file, the rewrite window)."""
        return cls.of(draft_of(orjson.loads(payload)), payload, digest)
