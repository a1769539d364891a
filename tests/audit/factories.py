"""Real contract objects with realistic values (no fakes)."""

from __future__ import annotations

import hashlib

from steerguard.policy.decision import BundleRef, Decision, Dropped, DropReason, Evidence, RuleMatch
from steerguard.runtime.plan import Intervention, Operation, Positions, SteeringPlan
from steerguard.runtime.report import InterventionReport, LayerMeasurement
from steerguard.runtime.result import GenerationResult
from steerguard.vectors.fingerprint import ModelFingerprint

MODEL = ModelFingerprint(model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
                         architecture="LlamaForCausalLM", hidden_size=576, num_layers=30)
BUNDLE = BundleRef(name="child-safety", revision="2025.06.1",
                   content_hash=hashlib.sha256(b"bundle").hexdigest())


def decision(n: int = 0, *, vectors: tuple[str, ...] = ("calm", "formal"),
             rule: str = "minor-calm", quote: str = "I am 12 years old",
             detail: str = "") -> Decision:
    interventions = tuple(
        Intervention(vector=v, vector_hash=hashlib.sha256(v.encode()).hexdigest()[:16],
                     layers=(10, 11, 12), strength=0.08 + 0.01 * i, op=Operation.ADD,
                     positions=Positions.parse("all"), source=rule)
        for i, v in enumerate(vectors)
    )
    return Decision(
        decision_id=hashlib.sha256(f"decision-{n}".encode()).hexdigest()[:24],
        bundle=BUNDLE,
        matched=(RuleMatch(rule_id=rule, priority=10, description="minors get a calm tone",
                           evidence=(Evidence(predicate="regex", source="message.user",
                                              detail=detail, quote=quote,
                                              span=(0, len(quote))),)),),
        dropped=(Dropped(rule_id="upbeat", vector="cheerful", reason=DropReason.LOST_GROUP,
                         detail="lost exclusive group 'tone' to minor-calm"),),
        plan=SteeringPlan(interventions=interventions),
        explanation=f"{rule} matched on message.user",
    )


def reports(d: Decision) -> tuple[InterventionReport, ...]:
    return tuple(
        InterventionReport(
            index=i, intervention=iv, vector_hash=iv.vector_hash or "",
            coefficients={layer: 0.08 * 3.1 for layer in iv.layers},
            layers=tuple(LayerMeasurement(layer=layer, positions_affected=42, delta_norm=0.91,
                                          projection_before=-0.12, projection_after=0.35)
                         for layer in iv.layers),
        )
        for i, iv in enumerate(d.plan.interventions)
    )


def result(d: Decision, text: str = "Sure, here is a calm answer.") -> GenerationResult:
    return GenerationResult(text=text, token_ids=tuple(range(17)), prompt_tokens=31,
                            finish_reason="stop", reports=reports(d), latency_s=0.41)
