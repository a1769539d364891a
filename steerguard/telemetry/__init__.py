"""OpenTelemetry traces and metrics for steerguard, on the OpenTelemetry API only.

The library never installs a global provider: pass `tracer_provider` / `meter_provider` to
`Telemetry`, or let an application call `steerguard.telemetry.setup.configure_telemetry()`.
"""

from steerguard.telemetry.attributes import SEMCONV_VERSION
from steerguard.telemetry.metrics import SteerguardMetrics
from steerguard.telemetry.spans import (
    DecisionScope,
    ModelCall,
    SteeringScope,
    Telemetry,
    current_ids,
    get_telemetry,
)

__all__ = [
    "SEMCONV_VERSION",
    "DecisionScope",
    "ModelCall",
    "SteerguardMetrics",
    "SteeringScope",
    "Telemetry",
    "current_ids",
    "get_telemetry",
]
