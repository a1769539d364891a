"""Policy engine: bundles in YAML decide, per request, what to steer and why."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from steerguard.policy.bundle import Bundle
from steerguard.policy.catalog import MappingCatalog, VectorCatalog
from steerguard.policy.decision import BundleRef, Decision, Dropped, DropReason, Evidence, RuleMatch
from steerguard.policy.engine import PolicyEngine
from steerguard.policy.errors import EvaluationError, PolicyError, PolicyIssue, ProfileError
from steerguard.policy.inputs import ChatMessage, RequestContext, ToolCall, ToolState, UserProfile
from steerguard.policy.loader import load_bundle, load_bundle_text
from steerguard.policy.store import PolicyStore, ReloadResult

if TYPE_CHECKING:
    from steerguard.policy.activation import ActivationProbe, calibrate_probe

__all__ = [
    "ActivationProbe",
    "Bundle",
    "BundleRef",
    "ChatMessage",
    "Decision",
    "DropReason",
    "Dropped",
    "EvaluationError",
    "Evidence",
    "MappingCatalog",
    "PolicyEngine",
    "PolicyError",
    "PolicyIssue",
    "PolicyStore",
    "ProfileError",
    "ReloadResult",
    "RequestContext",
    "RuleMatch",
    "ToolCall",
    "ToolState",
    "UserProfile",
    "VectorCatalog",
    "calibrate_probe",
    "load_bundle",
    "load_bundle_text",
]


def __getattr__(name: str) -> Any:
    # The calibration code needs torch; deciding does not, so import it only when asked.
    if name in ("ActivationProbe", "calibrate_probe"):
        from steerguard.policy import activation

        return getattr(activation, name)
    raise AttributeError(name)
