"""One chat completion through the pipeline, whatever shell asked for it (the LangChain chat
model, the HTTP server): messages and options in, a prepared call, then its Turn and outputs.

Identity (profile, session, context, request id) always comes from the calling application,
never from message text.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from langchain_core.messages import BaseMessage

from steerguard.chat.grammar import BACKEND, GrammarFactory, GrammarProcessor
from steerguard.chat.messages import probe_offset, to_policy_messages, to_template_messages
from steerguard.chat.modes import Bounds, OutputMode, Outputs, choose_mode
from steerguard.chat.tools import ToolSpec
from steerguard.pipeline import EXPLICIT_RULE, Request, SteeringPipeline, StreamBackend, Turn
from steerguard.policy.inputs import RequestContext, UserProfile
from steerguard.runtime.engine import GenerationParams


@dataclass(frozen=True, repr=False)
class RequestIdentity:
    """Trusted per-request facts from the application."""

    profile: UserProfile | None = None
    session_id: str | None = None
    context: RequestContext | None = None
    request_id: str | None = None

    def __repr__(self) -> str:  # rides in kwargs and logs: never print a profile
        return "RequestIdentity(<redacted>)"


@dataclass
class ChatCall:
    """One prepared generation: the request, the decoding settings and the output mode."""

    request: Request
    params: GenerationParams
    mode: OutputMode
    model_name: str
    grammar: GrammarProcessor | None = None
    timeout: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    timed_out: bool = False

    @contextlib.contextmanager
    def deadline(self) -> Iterator[None]:
        """On expiry generation stops at the next token (audited cancelled)."""
        timer = None
        if self.timeout is not None:

            def expire() -> None:
                self.timed_out = True
                self.cancel.set()

            timer = threading.Timer(self.timeout, expire)
            timer.daemon = True
            timer.start()
        try:
            yield
        finally:
            if timer is not None:
                timer.cancel()

    def check_timeout(self) -> None:
        if self.timed_out:
            raise TimeoutError(f"generation took longer than timeout={self.timeout} s")

    def outputs(self, turn: Turn) -> Outputs:
        return self.mode.parse(turn.result.text if turn.result is not None else "")

    def finish_reason(self, turn: Turn, outputs: Outputs) -> str:
        finish = turn.result.finish_reason if turn.result is not None else "cancelled"
        return "tool_calls" if outputs.tool_calls and finish == "stop" else finish

    def metadata(self, turn: Turn) -> dict[str, Any]:
        """What steerguard did for this request: returned with every answer."""
        d = turn.decision
        meta: dict[str, Any] = {
            "decision_id": d.decision_id,
            "request_id": turn.request.request_id,
            "bundle": f"{d.bundle.name}@{d.bundle.revision}",
            "rules": d.rule_ids,
            "vectors": [
                {"vector": i.vector, "strength": i.strength, "layers": list(i.layers),
                 "op": i.op.value, "positions": str(i.positions), "rule": i.source}
                for i in d.plan.interventions
                if not i.is_noop
            ],
            "explanation": d.explanation,
            "explicit": turn.request.explicit_plan is not None and EXPLICIT_RULE in d.rule_ids,
            "activation_scores": dict(turn.activation_scores),
            "failed_closed": d.failed_closed,
            "audit_ids": list(turn.audit_ids),
            "outcome": turn.outcome,
        }
        if self.grammar is not None:
            meta["grammar"] = {"backend": BACKEND,
                               "ms_per_token": round(self.grammar.ms_per_token, 3)}
        return meta


def prepare_call(
    pipeline: SteeringPipeline,
    grammars: GrammarFactory | None,
    messages: Sequence[BaseMessage],
    params: GenerationParams,
    *,
    model_name: str,
    identity: RequestIdentity | None = None,
    tools: Sequence[Mapping[str, Any] | Any] = (),
    tool_choice: Any = None,
    response_format: Mapping[str, Any] | None = None,
    bounds: Bounds = Bounds(),
    timeout: float | None = None,
) -> ChatCall:
    """Render the prompt for the chosen output mode and build the request the policy reads.
    Raises ValueError for options that do not fit together (an unknown tool choice, a
    response format without a schema, a non-text message block)."""
    identity = identity or RequestIdentity()
    engine = pipeline.engine
    specs = tuple(ToolSpec.from_any(t) for t in tools)
    mode = choose_mode(grammars, tools=specs, tool_choice=tool_choice,
                       response_format=response_format, bounds=bounds)
    prompt_ids = engine.encode(to_template_messages(messages, mode.prompt_tools))
    if mode.prefix:
        prompt_ids += engine.tokenizer(mode.prefix, add_special_tokens=False)["input_ids"]
    request = Request(
        messages=tuple(to_policy_messages(messages)),
        prompt=prompt_ids,
        probe_offset=probe_offset(engine.encode, messages, mode.prompt_tools, prompt_ids),
        profile=identity.profile,
        context=identity.context,
        session_id=identity.session_id,
        request_id=identity.request_id or uuid.uuid4().hex,
    )
    if mode.whole_answer_constrained:
        # One JSON value must not be cut by a stop string, nor by a budget smaller than the
        # bounded schema needs (+1: the end of turn).
        params = params.model_copy(update={"stop": (), "max_new_tokens": max(
            params.max_new_tokens, bounds.min_tokens, mode.budget + 1)})
    processor = GrammarProcessor(mode.grammar, grammars.vocab_size) if mode.grammar else None
    return ChatCall(request, params, mode, model_name, processor, timeout)


def run_call(pipeline: SteeringPipeline, call: ChatCall, retries: int = 0) -> Turn:
    """The whole generation; out-of-memory errors (the one transient failure of local
    inference) are retried `retries` times."""
    for attempt in range(max(0, retries) + 1):
        try:
            with call.deadline():
                turn = pipeline.run(call.request, call.params, logits_processor=call.grammar,
                                    cancel=call.cancel)
            call.check_timeout()
            return turn
        except torch.OutOfMemoryError:
            if attempt >= retries:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    raise AssertionError("unreachable")


def stream_call(
    pipeline: SteeringPipeline, call: ChatCall, backend: StreamBackend | None = None
) -> Iterator[str | Turn]:
    """Content deltas the mode lets through as tokens arrive, then the Turn. Closing the
    iterator cancels generation (audited cancelled). `backend` runs the prompt in place of
    the engine (a batching scheduler)."""
    items = pipeline.run_stream(call.request, call.params, logits_processor=call.grammar,
                                cancel=call.cancel, backend=backend)
    text = emitted = ""
    with call.deadline(), contextlib.closing(items):
        for item in items:
            if isinstance(item, Turn):
                call.check_timeout()
                yield item
                return
            text += item[0]
            visible = call.mode.visible(text)
            delta, emitted = visible[len(emitted):], visible
            if delta:
                yield delta
