"""One request, one way through: request -> decision -> plan -> generate -> audit records.

Each stage is its own method (`decide`, `plan`, `generate` / `stream`, `record`) so tracing
can wrap each one; `run` and `run_stream` only chain them. Nothing about a request is kept on
the pipeline: everything per request lives in `Request`, `Planned` and `Turn`, so one pipeline
serves many threads. The composition root (steerguard.root) builds pipelines; shells (the chat
model, the CLI, the server) call them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import orjson

from steerguard.audit.log import AuditLog
from steerguard.canonical import digest
from steerguard.directions.probe import ActivationProbe
from steerguard.errors import SteerguardError
from steerguard.policy.decision import Decision, Evidence, RuleMatch
from steerguard.policy.engine import PolicyEngine
from steerguard.policy.explain import explanation
from steerguard.policy.inputs import ChatMessage, RequestContext, UserProfile
from steerguard.probes import ProbeProvider
from steerguard.runtime.engine import (
    GenerationParams,
    LogitsProcessor,
    Prompt,
    SteeringEngine,
    StreamChunk,
)
from steerguard.runtime.plan import SteeringPlan
from steerguard.runtime.program import PlanResolver
from steerguard.runtime.result import GenerationResult
from steerguard.telemetry import ModelCall, Telemetry, current_ids, get_telemetry

Outcome = Literal["completed", "cancelled", "error"]
PolicySource = PolicyEngine | Callable[[], PolicyEngine]
# What runs a prompt: SteeringEngine.stream's signature; a batching scheduler passes its own.
StreamBackend = Callable[..., Iterator[StreamChunk]]
EXPLICIT_RULE = "explicit-plan"


@dataclass(frozen=True)
class Request:
    """Everything one request brings: the conversation (what the policy reads), the prompt
    the model sees (token ids or messages), and trusted identity from the application."""

    messages: tuple[ChatMessage, ...]
    prompt: Prompt
    profile: UserProfile | None = None
    context: RequestContext | None = None
    session_id: str | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Prompt tokens after the point activation probes read (the latest human turn's end): the
    # agent's tool calls and results after it, a forced tool call's opening.
    probe_offset: int = 0
    # A plan the caller chose instead of the policy's (a policy author trying vectors), and
    # who chose it: decided and audited as the rule EXPLICIT_RULE.
    explicit_plan: SteeringPlan | None = None
    explicit_by: str | None = None

    @property
    def user_id(self) -> str | None:
        return self.profile.user_id if self.profile is not None else None

    @property
    def last_user_text(self) -> str | None:
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return None


@dataclass
class Planned:
    """One request's plan, bound to the policy revision in force when it was planned: deciding,
    steering, auditing and the answer all use that revision, even if a reload lands meanwhile.

    With activation conditions the engine calls `resolve` mid-prefill with the probes' scores;
    it decides once and returns the Decision (the engine steers with its plan)."""

    request: Request
    policy: PolicyEngine
    decide: Callable[[Mapping[str, float] | None], Decision]
    probes: dict[str, ActivationProbe] = field(default_factory=dict)
    decision: Decision | None = None  # known at once, or after `resolve`
    call: ModelCall | None = None  # the request's model-call span; stages hang theirs off it
    halt: threading.Event | None = None  # set when a mid-prefill decision fails closed
    activation_scores: dict[str, float] = field(default_factory=dict)  # calibrated

    @property
    def runtime_probes(self) -> tuple[ActivationProbe, ...]:
        return tuple(self.probes.values())

    @property
    def plan(self) -> SteeringPlan | PlanResolver:
        """The plan, or, while waiting for the probes, what the engine calls to get it."""
        if self.decision is not None:
            return self.decision.plan
        return lambda raw: self.resolve(raw).plan

    def resolve(self, raw: Mapping[str, float]) -> Decision:
        """Decide from the probes' raw readings (projections) of this request's prompt."""
        if self.decision is None:
            self.activation_scores = {
                n: self.probes[n].probability(float(v)) for n, v in raw.items() if n in self.probes
            }
            self.decision = self.decide(self.activation_scores)
            if self.decision.failed_closed and self.halt is not None:
                self.halt.set()  # stop after the first token; run() then refuses
        return self.decision

    def decided(self) -> Decision:
        """The decision to audit and answer with. A resolver that never ran (cancelled or
        failed before the probe layer) still owes one: decided without scores, by the same
        revision."""
        if self.decision is None:
            self.decision = self.decide(None)
        return self.decision


@dataclass
class Turn:
    """What one request produced: its decision, the generation, the outcome, the audit ids."""

    request: Request
    decision: Decision
    result: GenerationResult | None
    outcome: Outcome
    audit_ids: list[str]
    error: BaseException | None = None
    activation_scores: dict[str, float] = field(default_factory=dict)  # condition -> [0, 1]


class PolicyFailedClosed(SteerguardError):
    """The policy could not be evaluated (e.g. a regex timeout under `on_error: closed`):
    the request must not be answered. Recorded in the audit log as an error."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"policy failed closed, not answering: {decision.error}")
        self.decision = decision


class SteeringPipeline:
    """Runs requests against one engine, one policy (engine or a getter for hot reload) and
    an optional audit log. Thread-safe: per-request state never lands on `self`."""

    def __init__(
        self,
        engine: SteeringEngine,
        policy: PolicySource,
        audit: AuditLog | None = None,
        *,
        probes: ProbeProvider | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.engine = engine
        self._policy = policy
        self.audit = audit
        self.probes = probes or ProbeProvider()
        # The global OpenTelemetry API unless given: a no-op until the application sets an SDK.
        self.telemetry = telemetry or get_telemetry()

    # stages -----------------------------------------------------------------------------

    @property
    def policy(self) -> PolicyEngine:
        """The policy engine in force now (a store's getter picks up hot reloads)."""
        return self._policy if isinstance(self._policy, PolicyEngine) else self._policy()

    def decide(
        self,
        request: Request,
        policy: PolicyEngine | None = None,
        activation_scores: Mapping[str, float] | None = None,
        call: ModelCall | None = None,
    ) -> Decision:
        with self.telemetry.decision(call) as traced:
            decision = (policy or self.policy).decide(
                request.messages, request.profile, request.context, activation_scores
            )
            traced.record(decision)
        return decision

    def plan(self, request: Request, call: ModelCall | None = None) -> Planned:
        """Decide now, or, when the bundle reads the model's activations, leave the decision
        to the engine's probes mid-prefill. Under the audit overflow policy `refuse`, a request
        whose record could not be kept fails here, before anything is steered
        (AuditUnavailableError)."""
        if self.audit is not None and self.audit.config.overflow == "refuse":
            self.audit.check_available()
        policy = self.policy  # one revision for the whole request, even across a reload
        if request.explicit_plan is not None:
            explicit = explicit_decision(policy, request, request.explicit_plan)
            with self.telemetry.decision(call) as traced:
                traced.record(explicit)
            return Planned(request, policy, lambda _: explicit, decision=explicit, call=call)

        def decide(scores: Mapping[str, float] | None) -> Decision:
            return self.decide(request, policy, scores, call=call)

        probes = self.probes.for_policy(policy, self.engine)
        planned = Planned(request, policy, decide, probes, call=call)
        if not probes:
            planned.decided()
        return planned

    def generate(
        self,
        request: Request,
        planned: Planned,
        params: GenerationParams,
        *,
        logits_processor: LogitsProcessor | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        known = planned.decision.plan if planned.decision is not None else None
        with self.telemetry.steering(planned.call, known) as steering:
            result = self.engine.generate(
                request.prompt,
                planned.plan,
                params,
                probes=planned.runtime_probes,
                probe_offsets=[request.probe_offset],
                logits_processor=logits_processor,
                cancel=cancel,
            )
            steering.record(result)
        return result

    def stream(
        self,
        request: Request,
        planned: Planned,
        params: GenerationParams,
        *,
        logits_processor: LogitsProcessor | None = None,
        cancel: threading.Event | None = None,
        backend: StreamBackend | None = None,
    ) -> Iterator[tuple[str, int | None, GenerationResult | None]]:
        """(text delta, token id, final result on the last item); `backend` runs the prompt
        in place of the engine's own `stream` (a batching scheduler's rows)."""
        known = planned.decision.plan if planned.decision is not None else None
        steering = self.telemetry.steering(planned.call, known)  # open across yields
        run = backend or self.engine.stream
        try:
            for chunk in run(
                request.prompt,
                planned.plan,
                params,
                probes=planned.runtime_probes,
                probe_offset=request.probe_offset,
                logits_processor=logits_processor,
                cancel=cancel,
            ):
                if chunk.result is not None:
                    steering.record(chunk.result)
                yield chunk.text, chunk.token_id, chunk.result
        except Exception as exc:
            steering.end(exc)
            raise
        finally:
            steering.end()

    def record(
        self,
        request: Request,
        decision: Decision,
        result: GenerationResult | None,
        outcome: Outcome,
        error: BaseException | None = None,
        latency_s: float | None = None,
        call: ModelCall | None = None,
    ) -> list[str]:
        """Queue the audit records (decision first, one per intervention); [] without a log."""
        if self.audit is None:
            return []
        with self.telemetry.audit(call):
            trace_id, span_id = current_ids()  # the audit span's: the span that made them
            return self.audit.record(
                decision,
                result,
                error if outcome == "error" and error is not None else outcome,
                request_id=request.request_id,
                session_id=request.session_id,
                user_id=request.user_id,
                model=self.engine.fingerprint,
                backend=self.engine.backend,
                prompt=request.last_user_text,
                answer=result.text if result is not None else None,
                latency_s=latency_s,
                trace_id=trace_id,
                span_id=span_id,
            )

    # whole requests ---------------------------------------------------------------------

    def run(
        self,
        request: Request,
        params: GenerationParams,
        *,
        logits_processor: LogitsProcessor | None = None,
        cancel: threading.Event | None = None,
    ) -> Turn:
        """decide -> generate -> record. A failed generation is recorded, then re-raised."""
        started = time.perf_counter()
        planned = self._plan_traced(request, params)
        planned.halt = cancel = cancel or threading.Event()
        self._refuse_if_closed(request, planned, started)
        try:
            result = self.generate(
                request, planned, params, logits_processor=logits_processor, cancel=cancel
            )
        except BaseException as exc:
            self._record_failure(request, planned, exc, started)
            raise
        self._refuse_if_closed(request, planned, started)
        return self._finish(request, planned, result, started)

    def run_stream(
        self,
        request: Request,
        params: GenerationParams,
        *,
        logits_processor: LogitsProcessor | None = None,
        cancel: threading.Event | None = None,
        backend: StreamBackend | None = None,
    ) -> Iterator[tuple[str, int | None] | Turn]:
        """Text deltas as (text, token id), then the Turn. Closing the iterator early cancels
        generation and records the request as cancelled."""
        started = time.perf_counter()
        planned = self._plan_traced(request, params, stream=True)
        planned.halt = cancel = cancel or threading.Event()
        self._refuse_if_closed(request, planned, started)
        result: GenerationResult | None = None
        chunks = self.stream(
            request, planned, params, logits_processor=logits_processor, cancel=cancel,
            backend=backend,
        )
        try:
            for text, token, final in chunks:
                if planned.decision is not None and planned.decision.failed_closed:
                    raise PolicyFailedClosed(planned.decision)  # decided mid-prefill
                if final is not None:
                    result = final
                else:
                    yield text, token
        except GeneratorExit:
            # The consumer stopped reading: finish the step in flight so the measured
            # reports still reach the audit log, marked cancelled.
            cancel.set()
            for _, _, final in chunks:
                result = final or result
            self._finish(request, planned, result, started, force_cancelled=True)
            raise
        except BaseException as exc:
            chunks.close()
            self._record_failure(request, planned, exc, started)
            raise
        yield self._finish(request, planned, result, started)

    # helpers ----------------------------------------------------------------------------

    def _refuse_if_closed(self, request: Request, planned: Planned, started: float) -> None:
        """A decision that failed closed means: do not answer. Audited as an error."""
        if planned.decision is not None and planned.decision.failed_closed:
            exc = PolicyFailedClosed(planned.decision)
            self._record_failure(request, planned, exc, started)
            raise exc

    def _finish(
        self,
        request: Request,
        planned: Planned,
        result: GenerationResult | None,
        started: float,
        force_cancelled: bool = False,
    ) -> Turn:
        decision = planned.decided()
        cancelled = force_cancelled or (result is not None and result.finish_reason == "cancelled")
        outcome: Outcome = "cancelled" if cancelled or result is None else "completed"
        try:
            ids = self.record(
                request, decision, result, outcome, latency_s=time.perf_counter() - started,
                call=planned.call,
            )
        except BaseException as exc:
            self._end_call(planned, exc)
            raise
        self._end_call(planned)
        return Turn(
            request, decision, result, outcome, ids, activation_scores=planned.activation_scores
        )

    def _record_failure(
        self, request: Request, planned: Planned, exc: BaseException, started: float
    ) -> None:
        try:
            decision = planned.decided()
            self.record(
                request, decision, None, "error", exc, latency_s=time.perf_counter() - started,
                call=planned.call,
            )
        finally:
            self._end_call(planned, exc)

    def _plan_traced(
        self, request: Request, params: GenerationParams, stream: bool = False
    ) -> Planned:
        """Start the request's `chat {model}` span and plan under it; `_finish` or
        `_record_failure` ends it."""
        call = self.telemetry.model_call(
            self.engine.fingerprint.model_id, params, messages=request.messages,
            stream=stream, request_id=request.request_id, conversation_id=request.session_id,
        )
        try:
            return self.plan(request, call)
        except BaseException as exc:
            call.end(exc)
            raise

    @staticmethod
    def _end_call(planned: Planned, error: BaseException | None = None) -> None:
        if planned.call is not None:
            planned.call.end(error)


def explicit_decision(policy: PolicyEngine, request: Request, plan: SteeringPlan) -> Decision:
    """The decision for a plan the caller chose: the policy in force is named (its revision
    was bypassed), the rule is EXPLICIT_RULE and the evidence names who chose it."""
    who = request.explicit_by or "unknown"
    interventions = tuple(i.model_copy(update={"source": EXPLICIT_RULE})
                          for i in plan.interventions)
    match = RuleMatch(
        rule_id=EXPLICIT_RULE, priority=0,
        description="a plan given in the request instead of the policy's",
        evidence=(Evidence(predicate="explicit", source="request.steerguard.plan",
                           detail=f"chosen by key {who}"),),
    )
    payload = orjson.dumps({
        "explicit": [i.model_dump(mode="json") for i in interventions],
        "by": who,
        "messages": [m.model_dump(mode="json", exclude_defaults=True) for m in request.messages],
    }, option=orjson.OPT_SORT_KEYS)
    bundle = policy.ref
    return Decision(
        decision_id=digest(f"{bundle.content_hash}\nexplicit\n", payload, size=32),
        bundle=bundle,
        matched=(match,),
        plan=SteeringPlan(interventions=interventions, revision=plan.revision),
        explanation=explanation(bundle, (match,), (), interventions, (), False),
    )
