"""Steering runtime: load a model, compile plans, generate with measured interventions."""

from steerguard.runtime.engine import GenerationParams, SteeringEngine, StreamChunk
from steerguard.runtime.loading import BUNDLED, LoadedModel, load_model, wrap_model
from steerguard.runtime.plan import Intervention, Operation, Positions, PositionScope, SteeringPlan
from steerguard.runtime.program import Probe
from steerguard.runtime.report import InterventionReport, LayerMeasurement
from steerguard.runtime.result import GenerationResult

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
    "Probe",
    "SteeringEngine",
    "SteeringPlan",
    "StreamChunk",
    "load_model",
    "wrap_model",
]
