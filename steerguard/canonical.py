"""Canonical JSON and the one content hash built on it.

Canonical JSON is sorted keys, no spaces, UTF-8 (orjson). `digest` is SHA-256 over parts
given in order: bytes as they are, text as UTF-8, anything else as its canonical JSON. Audit
records and checkpoints (the stored bytes), steering plans, decisions, bundles and vectors
are all hashed with it, so one hash means the same bytes everywhere."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson


def canonical(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def digest(*parts: Any, size: int = 64) -> str:
    """Hex SHA-256 of the parts, cut to its first `size` digits."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes | bytearray | memoryview):
            h.update(part)
        elif isinstance(part, str):
            h.update(part.encode())
        else:
            h.update(canonical(part))
    return h.hexdigest()[:size]
