"""Steering vectors: the data type, extraction from concept datasets, storage and exchange.

The names below load on first use, so reading concept datasets does not import torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "ExtractionInfo": "steering_vector",
    "ModelFingerprint": "fingerprint",
    "SteeringVector": "steering_vector",
}
__all__ = [
    "ExtractionInfo",
    "ModelFingerprint",
    "SteeringVector",
]

if TYPE_CHECKING:
    from steerguard.vectors.fingerprint import ModelFingerprint
    from steerguard.vectors.steering_vector import ExtractionInfo, SteeringVector


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
