"""One request, one way through: request -> decision -> plan -> generate -> audit records.

The chat model, the demo and the CLI all run requests through `SteeringPipeline`. Each stage
is its own method (`decide`, `plan`, `generate` / `stream`, `record`) so tracing can wrap each
one; `run` and `run_stream` only chain them. Nothing about a request is kept on the pipeline:
everything per request lives in `Request` and `Turn`, so one pipeline serves many threads.
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from steerguard.audit.log import AuditLog
from steerguard.errors import PlanError, SteerguardError
from steerguard.policy.activation import ActivationProbe
from steerguard.policy.decision import Decision
from steerguard.policy.engine import PolicyEngine
from steerguard.policy.inputs import ChatMessage, RequestContext, UserProfile
from steerguard.runtime.engine import GenerationParams, LogitsProcessor, Prompt, SteeringEngine
from steerguard.runtime.plan import SteeringPlan
from steerguard.runtime.program import PlanResolver, Probe
from steerguard.runtime.result import GenerationResult
from steerguard.telemetry import ModelCall, Telemetry, current_ids, get_telemetry
from steerguard.telemetry.metrics import audit_log_stats

Outcome = Literal["completed", "cancelled", "error"]
PolicySource = PolicyEngine | Callable[[], PolicyEngine]


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

    @property
    def user_id(self) -> str | None:
        return self.profile.user_id if self.profile is not None else None

    @property
    def last_user_text(self) -> str | None:
        for m in reversed(self.messages):
            if m.role == "user":
                return m.content
        return None


class Planned:
    """The plan for one request. With activation conditions the decision is made mid-prefill
    (the engine calls `resolver` with the probes' scores), so `decision` is filled then."""

    def __init__(
        self,
        decision: Decision | None,
        resolver: PlanResolver | None = None,
        probes: Sequence[Probe] = (),
        call: ModelCall | None = None,
    ) -> None:
        self.decision = decision
        self.resolver = resolver
        self.probes = tuple(probes)
        self.call = call  # the request's model-call span; stages hang their spans off it
        self.halt: threading.Event | None = None  # set when the decision fails closed
        self.activation_scores: dict[str, float] = {}  # calibrated, once the probes have read

    @property
    def plan(self) -> SteeringPlan | PlanResolver:
        if self.resolver is not None:
            return self.resolver
        assert self.decision is not None
        return self.decision.plan


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

    @property
    def decision_record_id(self) -> str | None:
        return self.audit_ids[0] if self.audit_ids else None


class PolicyFailedClosed(SteerguardError):
    """The policy could not be evaluated (e.g. a regex timeout under `on_error: closed`):
    the request must not be answered. Recorded in the audit log as an error."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"policy failed closed, not answering: {decision.error}")
        self.decision = decision


def probe_score(probe: ActivationProbe, projection: float) -> float:
    """The calibrated probability for a raw projection h . direction (what the runtime reads)."""
    z = (projection - probe.threshold) / probe.scale
    return 1.0 / (1.0 + math.exp(-z)) if z > -60 else 0.0


class SteeringPipeline:
    """Runs requests against one engine, one policy (engine or a getter for hot reload) and
    an optional audit log. Thread-safe: per-request state never lands on `self`."""

    def __init__(
        self,
        engine: SteeringEngine,
        policy: PolicySource,
        audit: AuditLog | None = None,
        *,
        probes: Mapping[str, ActivationProbe] | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.engine = engine
        self._policy = policy
        self.audit = audit
        # The global OpenTelemetry API unless given: a no-op until the application sets an SDK.
        self.telemetry = telemetry or get_telemetry()
        self._unobserve_audit: Callable[[], None] | None = None
        if audit is not None:  # queue depth and written/spilled/dropped, read at collection
            self._observe_audit()
            # A forked worker's log takes a chain of its own (AuditLog._forked, registered
            # first, so it runs first): its metrics follow under that chain's id.
            ref = weakref.ref(self)
            os.register_at_fork(after_in_child=lambda: _observe_audit_again(ref))
        self._given_probes = dict(probes) if probes is not None else {}
        # Per bundle content hash, so a hot reload that changes a condition gets new probes.
        self._probes: dict[str, dict[str, ActivationProbe]] = {}
        self._probes_lock = threading.Lock()

    def _observe_audit(self) -> None:
        """Observe the audit log's counters under its chain id (replacing an earlier one)."""
        assert self.audit is not None
        if self._unobserve_audit is not None:
            self._unobserve_audit()
        self._unobserve_audit = self.telemetry.metrics.observe_audit(
            audit_log_stats(self.audit), source=self.audit.chain_id)

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
        """Decide now, or, when the bundle reads the model's activations, hand the engine a
        resolver that decides once the probes have scored the prompt. Under the audit
        overflow policy `refuse`, a request whose record could not be kept fails here, before
        anything is steered (AuditUnavailableError)."""
        if self.audit is not None and self.audit.config.overflow == "refuse":
            self.audit.check_available()
        policy = self.policy  # one revision for the whole request, even across a reload
        probes = self.activation_probes(policy)
        if not probes:
            return Planned(self.decide(request, policy, call=call), call=call)
        planned = Planned(None, probes=[
            Probe(name, part.layer, part.direction_tensor(), part.center, part.spread)
            for name, p in probes.items() for part in p.parts
        ], call=call)

        def resolve(raw: Mapping[str, float]) -> SteeringPlan:
            scores = {n: probe_score(probes[n], float(v)) for n, v in raw.items() if n in probes}
            planned.activation_scores = scores
            planned.decision = self.decide(request, policy, scores, call=planned.call)
            if planned.decision.failed_closed and planned.halt is not None:
                planned.halt.set()  # stop after the first token; run() then refuses
            return planned.decision.plan

        planned.resolver = resolve
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
                probes=planned.probes,
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
    ) -> Iterator[tuple[str, int | None, GenerationResult | None]]:
        """(text delta, token id, final result on the last item)."""
        known = planned.decision.plan if planned.decision is not None else None
        steering = self.telemetry.steering(planned.call, known)  # open across yields
        try:
            for chunk in self.engine.stream(
                request.prompt,
                planned.plan,
                params,
                probes=planned.probes,
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
    ) -> Iterator[tuple[str, int | None] | Turn]:
        """Text deltas as (text, token id), then the Turn. Closing the iterator early cancels
        generation and records the request as cancelled."""
        started = time.perf_counter()
        planned = self._plan_traced(request, params, stream=True)
        planned.halt = cancel = cancel or threading.Event()
        self._refuse_if_closed(request, planned, started)
        result: GenerationResult | None = None
        chunks = self.stream(
            request, planned, params, logits_processor=logits_processor, cancel=cancel
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
        decision = self._decision_of(request, planned)
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
            decision = self._decision_of(request, planned)
            self.record(
                request, decision, None, "error", exc, latency_s=time.perf_counter() - started,
                call=planned.call,
            )
        finally:
            self._end_call(planned, exc)

    def _decision_of(self, request: Request, planned: Planned) -> Decision:
        # A resolver that never ran (cancelled or failed before the probe layer) still owes
        # the audit log a decision: decide without scores.
        return planned.decision or self.decide(request, call=planned.call)

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

    def activation_probes(self, policy: PolicyEngine) -> dict[str, ActivationProbe]:
        """Calibrated probes for the bundle's activation conditions ({} when it has none).

        Given probes win, then the bundle's own `probes/<name>.json`; otherwise each
        condition is calibrated once from its dataset and cached under $STEERGUARD_HOME."""
        wanted = policy.activation_conditions
        if not wanted:
            return {}
        key = policy.ref.content_hash
        with self._probes_lock:
            known = self._probes.get(key)
            if known is None:
                if len(self._probes) >= 4:  # old revisions: drop
                    self._probes.clear()
                known = self._probes[key] = {}
            for name, spec in wanted.items():
                if name not in known:
                    probe = self._given_probes.get(name) or self._calibrate(
                        policy, name, spec.read_layers, spec.dataset
                    )
                    self._check_probe(policy, name, spec.read_layers, probe)
                    known[name] = probe
            return {n: known[n] for n in wanted}

    def _check_probe(
        self, policy: PolicyEngine, name: str, layers: tuple[int, ...], probe: ActivationProbe
    ) -> None:
        """A probe fit elsewhere (other layers, another model) would read the wrong state."""
        fp = self.engine.fingerprint
        where = f"bundle {policy.ref.name}@{policy.ref.revision}, condition {name!r}"
        if sorted(probe.layers) != sorted(layers):
            raise PlanError(
                f"{where}: the bundle reads layers {list(layers)} but its probe was calibrated "
                f"at layers {list(probe.layers)}; recalibrate (steerguard eval --conditions-only)"
            )
        width = len(probe.parts[0].direction)
        if width != fp.hidden_size or (probe.model and probe.model != fp.model_id):
            raise PlanError(
                f"{where}: the probe was calibrated for model {probe.model!r} with hidden size "
                f"{width}, the engine runs {fp.model_id!r} with hidden size "
                f"{fp.hidden_size}; recalibrate (steerguard eval --conditions-only)"
            )

    def _calibrate(
        self, policy: PolicyEngine, name: str, layers: tuple[int, ...], dataset: str | None
    ) -> ActivationProbe:
        from steerguard.policy.activation import fit_condition_probe, load_condition_data
        from steerguard.runtime.loading import steerguard_home

        shipped = policy.bundle.root / "probes" / f"{name}.json"
        if shipped.is_file():  # calibrated and committed with the bundle
            return ActivationProbe.load(shipped)
        fp = self.engine.fingerprint
        cache = (
            steerguard_home() / "probes" / f"{fp.model_id}-{policy.ref.content_hash[:12]}"
            / f"{name}-L{'-'.join(map(str, layers))}.json"
        )
        if cache.is_file():
            return ActivationProbe.load(cache)
        folder = policy.bundle.root / (dataset or f"conditions/{name}")
        data = load_condition_data(folder)

        probe = fit_condition_probe(self.engine, name, data, layers, model=fp.model_id)
        cache.parent.mkdir(parents=True, exist_ok=True)
        probe.save(cache)
        return probe


def _observe_audit_again(ref: weakref.ReferenceType[SteeringPipeline]) -> None:
    pipeline = ref()
    if pipeline is not None:
        pipeline._observe_audit()
