"""Span names, kinds, attributes, parent/child structure and intervention events."""

from __future__ import annotations

import json

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from steerguard.policy.decision import Decision
from steerguard.runtime.engine import GenerationParams
from steerguard.runtime.result import GenerationResult
from steerguard.telemetry import attributes as a
from steerguard.telemetry import current_ids
from tests.telemetry.conftest import Otel, make_otel

PARAMS = GenerationParams(max_new_tokens=16, temperature=0.7, top_p=0.9, seed=3)


def run_request(otel: Otel, decision: Decision, result: GenerationResult,
                messages: list[dict[str, str]] | None = None) -> tuple[str | None, str | None]:
    """The shape a pipeline uses: decision, steering, audit enqueue under one model call."""
    with otel.telemetry.model_call("tiny", PARAMS, messages=messages) as call:
        with call.decision() as d:
            d.record(decision)
        with call.steering(decision.plan) as s:
            s.record(result)
        with call.audit():
            return current_ids()


def test_model_call_span_follows_genai_conventions(otel: Otel, decision, result) -> None:
    run_request(otel, decision, result)
    span = otel.span("chat tiny")
    assert span.kind is SpanKind.INTERNAL
    attrs = dict(span.attributes or {})
    assert attrs[a.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[a.GEN_AI_PROVIDER_NAME] == "steerguard"
    assert attrs[a.GEN_AI_REQUEST_MODEL] == "tiny"
    assert attrs[a.GEN_AI_REQUEST_MAX_TOKENS] == 16
    assert attrs[a.GEN_AI_REQUEST_TEMPERATURE] == 0.7
    assert attrs[a.GEN_AI_REQUEST_TOP_P] == 0.9
    assert attrs[a.GEN_AI_REQUEST_SEED] == 3
    assert attrs[a.GEN_AI_USAGE_INPUT_TOKENS] == 11
    assert attrs[a.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    assert tuple(attrs[a.GEN_AI_RESPONSE_FINISH_REASONS]) == ("stop",)  # type: ignore[arg-type]
    assert attrs[a.DECISION_ID] == "dec-1"
    assert attrs[a.POLICY_BUNDLE] == "default"
    assert attrs[a.POLICY_REVISION] == "rev-7"
    assert tuple(attrs[a.VECTORS]) == ("calm", "formal")  # type: ignore[arg-type]
    assert a.ERROR_TYPE not in attrs
    assert span.status.status_code is StatusCode.UNSET
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.schema_url == a.SCHEMA_URL


def test_children_hang_off_the_model_call(otel: Otel, decision, result) -> None:
    run_request(otel, decision, result)
    root = otel.span("chat tiny")
    assert root.parent is None
    for name in (a.SPAN_DECISION, a.SPAN_STEERING, a.SPAN_AUDIT):
        child = otel.span(name)
        assert child.kind is SpanKind.INTERNAL
        assert child.parent is not None
        assert child.parent.span_id == root.context.span_id
        assert child.context.trace_id == root.context.trace_id
    decision_attrs = dict(otel.span(a.SPAN_DECISION).attributes or {})
    assert decision_attrs[a.DECISION_ID] == "dec-1"
    assert tuple(decision_attrs[a.POLICY_RULES]) == ("r.calm",)  # type: ignore[arg-type]
    assert decision_attrs[a.POLICY_OUTCOME] == "steered"
    assert decision_attrs[a.POLICY_FAILED_CLOSED] is False
    assert decision_attrs[a.PLAN_HASH] == decision.plan.content_hash()


def test_one_event_per_intervention(otel: Otel, decision, result) -> None:
    run_request(otel, decision, result)
    events = otel.span(a.SPAN_STEERING).events
    assert [e.name for e in events] == [a.INTERVENTION_EVENT] * 2
    first = dict(events[0].attributes or {})
    assert first[a.VECTOR_NAME] == "calm"
    assert first[a.RULE_ID] == "r.calm"
    assert tuple(first[a.INTERVENTION_LAYERS]) == (2, 3)  # type: ignore[arg-type]
    assert first[a.INTERVENTION_STRENGTH] == 0.25
    assert first[a.INTERVENTION_OP] == "add"
    assert first[a.INTERVENTION_POSITIONS] == "generated"
    assert first[a.INTERVENTION_DELTA_NORM] == pytest.approx(2.0)
    assert tuple(first[a.INTERVENTION_LAYER_DELTA_NORMS]) == (1.0, 3.0)  # type: ignore[arg-type]
    assert first[a.INTERVENTION_POSITIONS_AFFECTED] == 8
    assert a.RULE_ID not in dict(events[1].attributes or {})  # no rule asked for it


def test_audit_ids_are_the_audit_span(otel: Otel, decision, result) -> None:
    trace_id, span_id = run_request(otel, decision, result)
    audit = otel.span(a.SPAN_AUDIT)
    assert trace_id == trace.format_trace_id(audit.context.trace_id)
    assert span_id == trace.format_span_id(audit.context.span_id)


def test_errors_set_error_type_and_status(otel: Otel, decision) -> None:
    with pytest.raises(RuntimeError), otel.telemetry.model_call("tiny") as call:
        with call.decision() as d:
            d.record(decision)
        with call.steering(decision.plan):
            raise RuntimeError("boom")
    for name in ("chat tiny", a.SPAN_STEERING):
        span = otel.span(name)
        assert span.status.status_code is StatusCode.ERROR
        assert dict(span.attributes or {})[a.ERROR_TYPE] == "RuntimeError"
    assert otel.span(a.SPAN_DECISION).status.status_code is StatusCode.UNSET


def test_content_only_when_opted_in(otel: Otel, decision, result) -> None:
    messages = [{"role": "user", "content": "secret question"}]
    run_request(otel, decision, result, messages)
    attrs = dict(otel.span("chat tiny").attributes or {})
    assert a.GEN_AI_INPUT_MESSAGES not in attrs
    assert a.GEN_AI_OUTPUT_MESSAGES not in attrs
    assert "secret" not in repr(attrs)

    opted = make_otel(capture_content=True)
    run_request(opted, decision, result, messages)
    attrs = dict(opted.span("chat tiny").attributes or {})
    inputs = json.loads(str(attrs[a.GEN_AI_INPUT_MESSAGES]))
    assert inputs == [{"role": "user", "parts": [{"type": "text", "content": "secret question"}]}]
    outputs = json.loads(str(attrs[a.GEN_AI_OUTPUT_MESSAGES]))
    assert outputs[0]["parts"][0]["content"] == "hello there"
    assert outputs[0]["finish_reason"] == "stop"


def test_a_call_can_end_outside_its_block(otel: Otel, decision, result) -> None:
    """Streams keep the call open across yields: children still attach to it."""
    call = otel.telemetry.model_call("tiny", stream=True)
    steering = call.steering(decision.plan)
    steering.record(result)
    steering.end()
    with call.activate(), call.audit():
        pass
    call.end()
    call.end()  # idempotent
    root = otel.span("chat tiny")
    assert dict(root.attributes or {})[a.GEN_AI_REQUEST_STREAM] is True
    assert otel.span(a.SPAN_STEERING).parent.span_id == root.context.span_id  # type: ignore[union-attr]
    assert otel.span(a.SPAN_AUDIT).parent.span_id == root.context.span_id  # type: ignore[union-attr]


def test_library_never_sets_a_global_provider(decision, result) -> None:
    from steerguard.telemetry import get_telemetry

    before = trace.get_tracer_provider()
    with get_telemetry().model_call("tiny") as call, call.audit():
        ids = current_ids()
    assert trace.get_tracer_provider() is before
    if isinstance(before, trace.ProxyTracerProvider):  # no application set an SDK
        assert ids == (None, None)  # untraced: audit records carry no ids
