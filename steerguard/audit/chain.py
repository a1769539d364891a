"""Canonical JSON and the hash chain. A record's hash is SHA-256 of its stored canonical JSON,
which includes `prev` (the previous hash), `chain` and `seq`; the verifier hashes the stored
bytes, so any later re-serialisation cannot change a verdict."""

from __future__ import annotations

from typing import Any

from steerguard.canonical import canonical, digest

GENESIS = ""


def record_hash(payload: bytes) -> str:
    return digest(payload)


class ChainHead:
    """The writer's own chain: it alone assigns seq and prev, so writers never fork a chain."""

    def __init__(self, chain_id: str) -> None:
        self.chain_id = chain_id
        self.seq = -1
        self.hash = GENESIS

    def seal(self, body: dict[str, Any]) -> tuple[bytes, str]:
        """Stamp chain, seq and prev onto `body`; return its canonical bytes and hash."""
        body["chain"] = self.chain_id
        body["seq"] = self.seq + 1
        body["prev"] = self.hash
        payload = canonical(body)
        digest = record_hash(payload)
        self.seq += 1
        self.hash = digest
        return payload, digest
