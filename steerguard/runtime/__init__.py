"""Steering runtime: load a model, compile plans, generate with measured interventions.

The names below load on first use, so importing a light module of the package (`plan`, the
data types policy and audit records use) does not import torch and transformers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from steerguard.lazy import lazy_names

_WHERE = {
    "GenerationParams": "engine",
    "SteeringEngine": "engine",
    "StreamChunk": "engine",
    "BUNDLED": "loading",
    "LoadedModel": "loading",
    "load_model": "loading",
    "wrap_model": "loading",
    "Intervention": "plan",
    "Operation": "plan",
    "Positions": "plan",
    "PositionScope": "plan",
    "SteeringPlan": "plan",
    "InterventionReport": "report",
    "LayerMeasurement": "report",
    "GenerationResult": "result",
}
__all__ = [
    "BUNDLED",
    "GenerationParams",
    "GenerationResult",
    "Intervention",
    "InterventionReport",
    "LayerMeasurement",
    "LoadedModel",
    "Operation",
    "PositionScope",
    "Positions",
    "SteeringEngine",
    "SteeringPlan",
    "StreamChunk",
    "load_model",
    "wrap_model",
]

if TYPE_CHECKING:
    from steerguard.runtime.engine import GenerationParams, SteeringEngine, StreamChunk
    from steerguard.runtime.loading import BUNDLED, LoadedModel, load_model, wrap_model
    from steerguard.runtime.plan import (
        Intervention,
        Operation,
        Positions,
        PositionScope,
        SteeringPlan,
    )
    from steerguard.runtime.report import InterventionReport, LayerMeasurement
    from steerguard.runtime.result import GenerationResult


__getattr__ = lazy_names(__name__, _WHERE)
