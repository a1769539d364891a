"""Domain objects -> span attributes. Pure functions, called only when a span records."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from opentelemetry.util.types import AttributeValue

from steerguard.telemetry import attributes as a

if TYPE_CHECKING:  # keeps `import steerguard.telemetry` free of torch
    from steerguard.policy.decision import Decision
    from steerguard.runtime.engine import GenerationParams
    from steerguard.runtime.plan import SteeringPlan
    from steerguard.runtime.report import InterventionReport
    from steerguard.runtime.result import GenerationResult

Attrs = dict[str, AttributeValue]


def params_attributes(params: GenerationParams | None) -> Attrs:
    if params is None:
        return {}
    out: Attrs = {
        a.GEN_AI_REQUEST_MAX_TOKENS: params.max_new_tokens,
        a.GEN_AI_REQUEST_TEMPERATURE: params.temperature,
        a.GEN_AI_REQUEST_TOP_P: params.top_p,
    }
    if params.seed is not None:
        out[a.GEN_AI_REQUEST_SEED] = params.seed
    if params.stop:
        out[a.GEN_AI_REQUEST_STOP_SEQUENCES] = list(params.stop)
    return out


def vector_names(plan: SteeringPlan) -> list[str]:
    """Distinct vector names the plan actually applies, in plan order."""
    return list(dict.fromkeys(i.vector for i in plan.interventions if not i.is_noop))


def decision_attributes(decision: Decision) -> Attrs:
    """What identifies a decision; set on both the decision span and the model-call span."""
    return {
        a.DECISION_ID: decision.decision_id,
        a.POLICY_BUNDLE: decision.bundle.name,
        a.POLICY_REVISION: decision.bundle.revision,
        a.VECTORS: vector_names(decision.plan),
    }


def decision_detail(decision: Decision) -> Attrs:
    """The rest: only on the decision span."""
    return {
        a.POLICY_BUNDLE_HASH: decision.bundle.content_hash,
        a.POLICY_RULES: decision.rule_ids,
        a.POLICY_DROPPED: [d.rule_id for d in decision.dropped],
        a.POLICY_FAILED_CLOSED: decision.failed_closed,
        a.POLICY_OUTCOME: decision_outcome(decision),
        a.PLAN_HASH: decision.plan.content_hash(),
        a.INTERVENTION_COUNT: sum(1 for i in decision.plan.interventions if not i.is_noop),
    }


def decision_outcome(decision: Decision) -> str:
    """A low-cardinality label for the decision latency metric."""
    if decision.failed_closed:
        return "failed_closed"
    if decision.error:
        return "error"
    return "unsteered" if decision.plan.is_empty else "steered"


def intervention_event(report: InterventionReport) -> Attrs:
    iv = report.intervention
    out: Attrs = {
        a.INTERVENTION_INDEX: report.index,
        a.VECTOR_NAME: iv.vector,
        a.VECTOR_HASH: report.vector_hash,
        a.INTERVENTION_LAYERS: list(iv.layers),
        a.INTERVENTION_STRENGTH: iv.strength,
        a.INTERVENTION_OP: iv.op.value,
        a.INTERVENTION_POSITIONS: str(iv.positions),
        a.INTERVENTION_POSITIONS_AFFECTED: report.positions_affected,
        a.INTERVENTION_DELTA_NORM: report.mean_delta_norm,
        a.INTERVENTION_MEASURED_LAYERS: [m.layer for m in report.layers],
        a.INTERVENTION_LAYER_DELTA_NORMS: [m.delta_norm for m in report.layers],
        a.INTERVENTION_PROJECTION_BEFORE: [m.projection_before for m in report.layers],
        a.INTERVENTION_PROJECTION_AFTER: [m.projection_after for m in report.layers],
    }
    if iv.source is not None:
        out[a.RULE_ID] = iv.source
    return out


def result_attributes(result: GenerationResult) -> Attrs:
    return {
        a.GEN_AI_USAGE_INPUT_TOKENS: result.prompt_tokens,
        a.GEN_AI_USAGE_OUTPUT_TOKENS: result.completion_tokens,
        a.GEN_AI_RESPONSE_FINISH_REASONS: [result.finish_reason],
    }


def _role_content(message: object) -> tuple[str, str]:
    """Engine messages are mappings; policy ChatMessages are models with the same fields."""
    if isinstance(message, Mapping):
        return str(message.get("role", "user")), str(message.get("content", ""))
    return str(getattr(message, "role", "user")), str(getattr(message, "content", ""))


def input_messages(messages: Sequence[object] | str) -> str:
    """gen_ai.input.messages: JSON of [{role, parts: [{type: text, content}]}]."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    out = []
    for m in messages:
        role, content = _role_content(m)
        out.append({"role": role, "parts": [{"type": "text", "content": content}]})
    return json.dumps(out, ensure_ascii=False)


def output_messages(text: str, finish_reason: str) -> str:
    return json.dumps(
        [{"role": "assistant", "parts": [{"type": "text", "content": text}],
          "finish_reason": finish_reason}],
        ensure_ascii=False,
    )
