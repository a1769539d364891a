"""Spans for one request: `chat {model}` (INTERNAL) with children for the policy decision,
the steering (one event per intervention) and the audit enqueue.

Children are started with the model-call span as their explicit parent, so the structure holds
even when the call span is not current (a stream consumed across yields or threads). The
decision and audit spans are current inside their block; the audit log reads `current_ids()`
there, so every record carries the ids of the span that made it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING

from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from steerguard.telemetry import attributes as a
from steerguard.telemetry import mapping
from steerguard.telemetry.metrics import SteerguardMetrics, _version

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from steerguard.policy.decision import Decision
    from steerguard.runtime.engine import GenerationParams
    from steerguard.runtime.plan import SteeringPlan
    from steerguard.runtime.result import GenerationResult

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
Messages = Sequence[object] | str  # mappings or objects with role and content


def error_type(exc: BaseException) -> str:
    return type(exc).__qualname__ or a.ERROR_TYPE_OTHER


def current_ids() -> tuple[str | None, str | None]:
    """Hex (trace_id, span_id) of the current span, or (None, None) when nothing is traced."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return trace.format_trace_id(ctx.trace_id), trace.format_span_id(ctx.span_id)


def _fail(span: Span, exc: BaseException) -> None:
    if span.is_recording():
        span.set_attribute(a.ERROR_TYPE, error_type(exc))
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, str(exc) or error_type(exc)))


class Telemetry:
    """The tracer, the instruments and the content opt-in. Pass providers to keep everything
    local (tests); without them the global API is used, which is a no-op until an
    application installs an SDK (see steerguard.telemetry.setup)."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        capture_content: bool | None = None,
    ) -> None:
        self.tracer = trace.get_tracer(
            a.INSTRUMENTATION_NAME, _version(), tracer_provider, schema_url=a.SCHEMA_URL
        )
        self.metrics = SteerguardMetrics(meter_provider)
        if capture_content is None:
            capture_content = os.environ.get(CAPTURE_CONTENT_ENV, "").lower() in ("1", "true")
        self.capture_content = capture_content

    def model_call(
        self,
        model: str,
        params: GenerationParams | None = None,
        *,
        operation: str = a.OPERATION_CHAT,
        messages: Messages | None = None,
        stream: bool = False,
        request_id: str | None = None,
        conversation_id: str | None = None,
    ) -> ModelCall:
        """Start the model-call span. Use it as a context manager (current inside), or call
        `end()` yourself when the call outlives one block, as a stream does."""
        base: dict[str, AttributeValue] = {
            a.GEN_AI_OPERATION_NAME: operation,
            a.GEN_AI_PROVIDER_NAME: a.PROVIDER,
            a.GEN_AI_REQUEST_MODEL: model,
        }
        span = self.tracer.start_span(
            f"{operation} {model}" if model else operation, kind=SpanKind.INTERNAL,
            attributes=base,
        )
        if span.is_recording():
            extra = mapping.params_attributes(params)
            if stream:
                extra[a.GEN_AI_REQUEST_STREAM] = True
            if request_id is not None:
                extra[a.REQUEST_ID] = request_id
            if conversation_id is not None:
                extra[a.GEN_AI_CONVERSATION_ID] = conversation_id
            if self.capture_content and messages is not None:
                extra[a.GEN_AI_INPUT_MESSAGES] = mapping.input_messages(messages)
            span.set_attributes(extra)
        return ModelCall(self, span, base)

    # Children take the call explicitly (None: the current span is the parent), so a stage
    # run on its own, outside a model call, is still traced.

    @contextmanager
    def _child(self, name: str, call: ModelCall | None) -> Iterator[Span]:
        parent = call.context if call is not None else None
        span = self.tracer.start_span(name, parent, SpanKind.INTERNAL)
        try:
            with trace.use_span(
                span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                yield span
        except BaseException as exc:
            _fail(span, exc)
            raise
        finally:
            span.end()

    @contextmanager
    def decision(self, call: ModelCall | None = None) -> Iterator[DecisionScope]:
        """Wrap PolicyEngine.decide; call `.record(decision)` inside. Times the decision."""
        started = time.perf_counter()
        attrs: dict[str, AttributeValue] = {}
        try:
            with self._child(a.SPAN_DECISION, call) as span:
                scope = DecisionScope(call, span)
                yield scope
                attrs = scope.metric_attrs
        except BaseException as exc:
            attrs = {a.ERROR_TYPE: error_type(exc)}
            raise
        finally:
            self.metrics.record_decision(time.perf_counter() - started, attrs)

    def steering(
        self, call: ModelCall | None = None, plan: SteeringPlan | None = None
    ) -> SteeringScope:
        """Start the steering span (not made current: a stream keeps it open across yields)."""
        parent = call.context if call is not None else None
        span = self.tracer.start_span(a.SPAN_STEERING, parent, SpanKind.INTERNAL)
        if plan is not None and span.is_recording():
            span.set_attributes({
                a.VECTORS: mapping.vector_names(plan),
                a.INTERVENTION_COUNT: sum(1 for i in plan.interventions if not i.is_noop),
            })
        return SteeringScope(self, call, span, named=plan is not None)

    def audit(self, call: ModelCall | None = None) -> AbstractContextManager[Span]:
        """The audit enqueue span, current inside: records built here carry its ids."""
        return self._child(a.SPAN_AUDIT, call)


class ModelCall:
    """One `chat {model}` span and the metrics that belong to it."""

    def __init__(self, tel: Telemetry, span: Span, base: dict[str, AttributeValue]) -> None:
        self.telemetry = tel
        self.span = span
        self._base = base
        self.context = trace.set_span_in_context(span)
        self._started = time.perf_counter()
        self._tokens: list[object] = []
        self._ended = False
        self._end_lock = threading.Lock()

    # context manager: the span is current inside ------------------------------------------

    def __enter__(self) -> ModelCall:
        self._tokens.append(context.attach(self.context))
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        context.detach(self._tokens.pop())  # type: ignore[arg-type]
        self.end(exc)

    def activate(self) -> AbstractContextManager[Span]:
        """Make the span current for a block without ending it."""
        return trace.use_span(
            self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    @property
    def ids(self) -> tuple[str, str] | tuple[None, None]:
        ctx = self.span.get_span_context()
        if not ctx.is_valid:
            return None, None
        return trace.format_trace_id(ctx.trace_id), trace.format_span_id(ctx.span_id)

    # children ---------------------------------------------------------------------------------

    def decision(self) -> AbstractContextManager[DecisionScope]:
        return self.telemetry.decision(self)

    def steering(self, plan: SteeringPlan | None = None) -> SteeringScope:
        return self.telemetry.steering(self, plan)

    def audit(self) -> AbstractContextManager[Span]:
        return self.telemetry.audit(self)

    # results ----------------------------------------------------------------------------------

    def record_decision(self, decision: Decision) -> None:
        if self.span.is_recording():
            self.span.set_attributes(mapping.decision_attributes(decision))

    def record_result(self, result: GenerationResult) -> None:
        """Usage, finish reason and (opted in) the answer; token usage metric."""
        if self.span.is_recording():
            attrs = mapping.result_attributes(result)
            attrs[a.GEN_AI_RESPONSE_MODEL] = self._base[a.GEN_AI_REQUEST_MODEL]
            if self.telemetry.capture_content:
                attrs[a.GEN_AI_OUTPUT_MESSAGES] = mapping.output_messages(
                    result.text, result.finish_reason
                )
            self.span.set_attributes(attrs)
        self.telemetry.metrics.record_tokens(
            self._base, result.prompt_tokens, result.completion_tokens
        )

    def end(self, error: BaseException | None = None) -> None:
        """End the span and record the duration; safe to call twice (the first call wins)."""
        with self._end_lock:
            if self._ended:
                return
            self._ended = True
        attrs = dict(self._base)
        if error is not None:
            _fail(self.span, error)
            attrs[a.ERROR_TYPE] = error_type(error)
        self.telemetry.metrics.record_duration(attrs, time.perf_counter() - self._started)
        self.span.end()


class DecisionScope:
    def __init__(self, call: ModelCall | None, span: Span) -> None:
        self.call = call
        self.span = span
        self.metric_attrs: dict[str, AttributeValue] = {}

    def record(self, decision: Decision) -> None:
        self.metric_attrs = {
            a.POLICY_BUNDLE: decision.bundle.name,
            a.POLICY_OUTCOME: mapping.decision_outcome(decision),
        }
        if self.span.is_recording():
            self.span.set_attributes(mapping.decision_attributes(decision))
            self.span.set_attributes(mapping.decision_detail(decision))
        if self.call is not None:
            self.call.record_decision(decision)


class SteeringScope:
    """The steering span: one `steerguard.intervention` event per measured intervention."""

    def __init__(
        self, tel: Telemetry, call: ModelCall | None, span: Span, named: bool = False
    ) -> None:
        self.telemetry = tel
        self.call = call
        self.span = span
        self.named = named  # vector names already set from the plan
        self._ended = False

    def __enter__(self) -> SteeringScope:
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end(exc)

    def record(self, result: GenerationResult) -> None:
        """Events and counters for what the runtime measured; usage on the call span."""
        if self.span.is_recording():
            for report in result.reports:
                self.span.add_event(a.INTERVENTION_EVENT, mapping.intervention_event(report))
            self.span.set_attributes(mapping.result_attributes(result))
            if not self.named:
                # The plan was chosen mid-prefill (activation conditions): name what ran.
                vectors = dict.fromkeys(r.intervention.vector for r in result.reports)
                self.span.set_attribute(a.VECTORS, list(vectors))
        self.telemetry.metrics.record_interventions(r.intervention for r in result.reports)
        if self.call is not None:
            self.call.record_result(result)

    def end(self, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        if error is not None:
            _fail(self.span, error)
        self.span.end()


_default: Telemetry | None = None
_default_lock = threading.Lock()


def get_telemetry() -> Telemetry:
    """The library default: global API providers (no-op until the application sets an SDK)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Telemetry()
    return _default
