"""Canonical JSON: sorted keys, no spaces, UTF-8 (orjson). Audit records are hashed over it,
and a steering plan's content hash is taken over it, so both mean the same bytes everywhere."""

from __future__ import annotations

from typing import Any

import orjson


def canonical(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
