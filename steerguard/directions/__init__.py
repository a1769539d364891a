"""Per-model directions: steering vectors and activation probes, the model fingerprint they
are fit to, the one fit check, and the library they are stored in. Below the runtime, which
reads both; it imports nothing of steerguard but errors, canonical and home.

The names below load on first use, so reading a fingerprint does not import torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from steerguard.lazy import lazy_names

_WHERE = {
    "ActivationProbe": "probe",
    "DirectionLibrary": "library",
    "ExtractionInfo": "vector",
    "ModelFingerprint": "fingerprint",
    "ProbeLayer": "probe",
    "SteeringVector": "vector",
    "fit_problem": "fingerprint",
    "load_vector": "storage",
    "save_vector": "storage",
}
__all__ = [
    "ActivationProbe",
    "DirectionLibrary",
    "ExtractionInfo",
    "ModelFingerprint",
    "ProbeLayer",
    "SteeringVector",
    "fit_problem",
    "load_vector",
    "save_vector",
]

if TYPE_CHECKING:
    from steerguard.directions.fingerprint import ModelFingerprint, fit_problem
    from steerguard.directions.library import DirectionLibrary
    from steerguard.directions.probe import ActivationProbe, ProbeLayer
    from steerguard.directions.storage import load_vector, save_vector
    from steerguard.directions.vector import ExtractionInfo, SteeringVector


__getattr__ = lazy_names(__name__, _WHERE)
