"""Policy engine: bundles in YAML decide, per request, what to steer and why.

The names below load on first use: importing a submodule (a condition kind, say) must not
build the schema before every kind is registered, and calibration needs torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from steerguard.lazy import lazy_names

_WHERE = {
    "ActivationProbe": "activation",
    "Bundle": "bundle",
    "BundleRef": "decision",
    "ChatMessage": "inputs",
    "Decision": "decision",
    "DropReason": "decision",
    "Dropped": "decision",
    "EvaluationError": "errors",
    "Evidence": "decision",
    "MappingCatalog": "catalog",
    "PolicyEngine": "engine",
    "PolicyError": "errors",
    "PolicyIssue": "errors",
    "PolicyStore": "store",
    "ProfileError": "errors",
    "ReloadResult": "store",
    "RequestContext": "inputs",
    "RuleMatch": "decision",
    "ToolCall": "inputs",
    "ToolState": "inputs",
    "UserProfile": "inputs",
    "VectorCatalog": "catalog",
    "calibrate_probe": "activation",
    "load_bundle": "loader",
    "load_bundle_text": "loader",
}
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

if TYPE_CHECKING:
    from steerguard.policy.activation import ActivationProbe, calibrate_probe
    from steerguard.policy.bundle import Bundle
    from steerguard.policy.catalog import MappingCatalog, VectorCatalog
    from steerguard.policy.decision import (
        BundleRef,
        Decision,
        Dropped,
        DropReason,
        Evidence,
        RuleMatch,
    )
    from steerguard.policy.engine import PolicyEngine
    from steerguard.policy.errors import EvaluationError, PolicyError, PolicyIssue, ProfileError
    from steerguard.policy.inputs import (
        ChatMessage,
        RequestContext,
        ToolCall,
        ToolState,
        UserProfile,
    )
    from steerguard.policy.loader import load_bundle, load_bundle_text
    from steerguard.policy.store import PolicyStore, ReloadResult


__getattr__ = lazy_names(__name__, _WHERE)
