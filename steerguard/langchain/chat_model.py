"""SteeredChatModel: a local Hugging Face model as a LangChain chat model, with a steering
policy decided per request and every intervention in the audit log.

Per-request identity comes only from the runnable config, never from message text:

    model.invoke(messages, config={"configurable": {
        "steerguard_profile": UserProfile(...) | dict,   # who the user is (trusted)
        "session_id": "...",                             # else LangGraph's thread_id
        "request_context": RequestContext(...) | dict,   # channel, locale, ...
        "request_id": "...",                             # optional; else a fresh uuid
    }})
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

import torch
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel, LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableMap,
    RunnablePassthrough,
    ensure_config,
)
from langchain_core.runnables.config import run_in_executor
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field, PrivateAttr

from steerguard.langchain.grammar import (
    BACKEND,
    GrammarFactory,
    GrammarProcessor,
    bound_schema,
    call_schema,
    worst_case_tokens,
)
from steerguard.langchain.messages import (
    probe_offset,
    to_policy_messages,
    to_template_messages,
)
from steerguard.langchain.tools import (
    CALL_OPEN,
    ToolChoice,
    ToolSpec,
    parse_call_json,
    parse_calls,
    safe_prefix,
    split_content,
)
from steerguard.pipeline import Request, SteeringPipeline, Turn
from steerguard.policy.engine import PolicyEngine
from steerguard.policy.inputs import RequestContext, UserProfile
from steerguard.resources import concepts_dir as shipped_concepts
from steerguard.resources import default_bundle_path
from steerguard.runtime.engine import GenerationParams, SteeringEngine
from steerguard.runtime.loading import BUNDLED

IDENTITY_KWARG = "_steerguard_identity"
PROFILE_KEY = "steerguard_profile"
SESSION_KEY = "session_id"
CONTEXT_KEY = "request_context"
REQUEST_ID_KEY = "request_id"


@dataclass(frozen=True, repr=False)
class RequestIdentity:
    """Trusted per-request facts from the runnable config."""

    profile: UserProfile | None = None
    session_id: str | None = None
    context: RequestContext | None = None
    request_id: str | None = None

    def __repr__(self) -> str:  # rides in kwargs: never print a profile into traces
        return "RequestIdentity(<redacted>)"

    @classmethod
    def from_config(cls, config: RunnableConfig | None) -> RequestIdentity:
        configurable = ensure_config(config).get("configurable") or {}
        profile = configurable.get(PROFILE_KEY)
        if isinstance(profile, Mapping):
            profile = UserProfile.model_validate(profile)
        context = configurable.get(CONTEXT_KEY)
        if isinstance(context, Mapping):
            context = RequestContext.model_validate(context)
        session = configurable.get(SESSION_KEY) or configurable.get("thread_id")
        request_id = configurable.get(REQUEST_ID_KEY)
        return cls(
            profile,
            str(session) if session is not None else None,
            context,
            str(request_id) if request_id is not None else None,
        )


# Engines, policies, audit logs and grammar factories are heavy: share them between model
# instances (LangChain code creates models freely, e.g. one per test or per bind).
_shared_lock = threading.Lock()
_engines: dict[str, SteeringEngine] = {}
_policies: dict[tuple[str, int], Any] = {}  # (bundle path, model's layer count)
_audits: dict[str, Any] = {}
_grammars: dict[int, GrammarFactory] = {}


def shared_engine(spec: str = BUNDLED, concepts_dir: Path | None = None) -> SteeringEngine:
    """The process-wide engine for `spec`, its steering vectors loaded (built once)."""
    with _shared_lock:
        engine = _engines.get(spec)
        if engine is None:
            from steerguard.runtime.loading import load_model

            engine = _engines[spec] = SteeringEngine(load_model(spec))
    ensure_vectors(engine, concepts_dir)
    return engine


def ensure_vectors(engine: SteeringEngine, concepts_dir: Path | None = None) -> None:
    """Load the concept vectors into an engine that has none: stored, else shipped (the
    bundled model's), else built."""
    if engine.vectors:
        return
    from steerguard.vectors.library import VectorLibrary

    library = VectorLibrary(engine.fingerprint)
    with _shared_lock:
        if engine.vectors:
            return
        library.load_into(engine, concepts_dir or shipped_concepts())


def _grammar_factory(engine: SteeringEngine) -> GrammarFactory:
    with _shared_lock:
        factory = _grammars.get(id(engine))
        if factory is None:
            vocab = int(engine.model.get_output_embeddings().weight.shape[0])
            factory = _grammars[id(engine)] = GrammarFactory(
                engine.tokenizer, vocab, engine.eos_ids
            )
        return factory


def _policy_source(policy: Any, num_layers: int) -> PolicyEngine | Callable[[], PolicyEngine]:
    from steerguard.policy.store import PolicyStore

    if isinstance(policy, PolicyEngine):
        return policy
    if isinstance(policy, PolicyStore):
        return lambda: policy.engine  # hot reloads are picked up per request
    path = str(Path(policy) if policy is not None else default_bundle_path())
    with _shared_lock:  # a reload that names a layer the model lacks keeps the bundle in force
        store = _policies.get((path, num_layers))
        if store is None:
            store = _policies[path, num_layers] = PolicyStore(path, num_layers=num_layers)
    return lambda: store.engine


def _default_audit() -> Any:
    from steerguard.audit.log import AuditLog

    with _shared_lock:
        log = _audits.get("default")
        if log is None:
            log = _audits["default"] = AuditLog()
        return log


@dataclass
class _Call:
    """One prepared generation: the request, the decoding settings and the output shape."""

    request: Request
    params: GenerationParams
    model_name: str
    mode: Literal["text", "auto", "forced", "json"]
    tools: tuple[ToolSpec, ...] = ()
    call_name: str | None = None  # forced call whose name is already in the prompt
    grammar: GrammarProcessor | None = None
    timeout: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    timed_out: bool = False


class SteeredChatModel(BaseChatModel):
    """A steered local model for LangChain and LangGraph agents.

    Defaults: the bundled SmolLM2-135M-Instruct, the shipped `support` policy bundle and the
    embedded audit store. Greedy decoding unless `temperature` > 0.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model_name: str = Field(default=BUNDLED, alias="model")
    """Model spec: "smollm2-135m" (bundled), a local directory or a hub id."""
    engine: SteeringEngine | None = Field(default=None, exclude=True)
    """An existing engine to run on (its vectors are loaded if it has none)."""
    policy: Any = Field(default=None, exclude=True)
    """PolicyEngine, PolicyStore or bundle path; None: the shipped support bundle."""
    audit: Any = Field(default=None, exclude=True)
    """AuditLog; None: the shared embedded-store log; False: no audit records."""
    concepts_dir: Path | None = Field(default=None, exclude=True)
    temperature: float = 0.0
    max_tokens: int | None = 256
    top_p: float = 1.0
    seed: int | None = None
    timeout: float | None = None
    """Seconds per call; on expiry generation stops, is audited cancelled, TimeoutError."""
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    max_retries: int = 2
    """Retries after an out-of-memory error (the only transient failure of local inference)."""
    streaming: bool = False
    max_string_chars: int = 96
    """Cap on free JSON strings in constrained output (required calls, structured output)."""
    max_array_items: int = 16
    min_call_tokens: int = 64
    """Budget floor for a required call or structured output; the budget is also raised to
    the worst case of the bounded schema, so constrained JSON is never cut short."""

    _pipelines: dict[str, SteeringPipeline] = PrivateAttr(default_factory=dict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    # LangChain plumbing -------------------------------------------------------------------

    @property
    def _llm_type(self) -> str:
        return "steerguard"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "seed": self.seed,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="steerguard",
            ls_model_name=kwargs.get("model", self.model_name),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict:
        kwargs.pop(IDENTITY_KWARG, None)  # keep the profile out of traces and cache keys
        return super()._get_invocation_params(stop=stop, **kwargs)

    # Identity rides from the config to _generate/_stream as a keyword argument, because
    # BaseChatModel hands its generation methods no config.
    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        kwargs.setdefault(IDENTITY_KWARG, RequestIdentity.from_config(config))
        return super().invoke(input, config, **kwargs)

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        kwargs.setdefault(IDENTITY_KWARG, RequestIdentity.from_config(config))
        return await super().ainvoke(input, config, **kwargs)

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[AIMessageChunk]:
        kwargs.setdefault(IDENTITY_KWARG, RequestIdentity.from_config(config))
        return super().stream(input, config, **kwargs)

    def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        kwargs.setdefault(IDENTITY_KWARG, RequestIdentity.from_config(config))
        return super().astream(input, config, **kwargs)

    # resources ----------------------------------------------------------------------------

    def pipeline(self, model: str | None = None) -> SteeringPipeline:
        """The pipeline for `model` (default: this model's), built on first use."""
        spec = model or self.model_name
        with self._lock:
            pipe = self._pipelines.get(spec)
            if pipe is not None:
                return pipe
        if self.engine is not None and spec == self.model_name:
            engine = self.engine
            ensure_vectors(engine, self.concepts_dir)
        else:
            engine = shared_engine(spec, self.concepts_dir)
        audit = None if self.audit is False else (self.audit or _default_audit())
        pipe = SteeringPipeline(
            engine, _policy_source(self.policy, engine.fingerprint.num_layers), audit
        )
        with self._lock:
            return self._pipelines.setdefault(spec, pipe)

    # tools and structured output ----------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools; tool_choice: "auto" (default), "none", "any"/"required", a tool name."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        ToolChoice.parse(tool_choice, [ToolSpec.from_any(t) for t in formatted])  # fail early
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(  # type: ignore[override]
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """function_calling: a required, grammar-checked tool call; json_schema: the whole
        answer is JSON constrained to the schema; json_mode: any JSON object."""
        if method == "function_calling":
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        if kwargs:
            raise ValueError(f"unsupported arguments: {sorted(kwargs)}")
        is_model = isinstance(schema, type) and is_basemodel_subclass(schema)
        if method == "json_schema":
            json_schema = convert_to_json_schema(schema)
            llm = self.bind(
                response_format={"type": "json_schema", "schema": json_schema},
                ls_structured_output_format={"kwargs": {"method": method},
                                             "schema": json_schema},
            )
        elif method == "json_mode":
            llm = self.bind(response_format={"type": "json_object"})
        else:
            raise ValueError(f"method {method!r}: use function_calling, json_schema or json_mode")
        parser: Runnable = (
            PydanticOutputParser(pydantic_object=schema)  # type: ignore[arg-type]
            if is_model
            else JsonOutputParser()
        )
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks(
            [fallback], exception_key="parsing_error"
        )

    # preparing a call ---------------------------------------------------------------------

    def _prepare(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[SteeringPipeline, _Call]:
        identity: RequestIdentity = kwargs.pop(IDENTITY_KWARG, None) or RequestIdentity()
        model_name = kwargs.get("model") or self.model_name
        pipe = self.pipeline(model_name)
        engine = pipe.engine
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        params = GenerationParams(
            max_new_tokens=max_tokens or 256,
            temperature=kwargs.get("temperature", self.temperature) or 0.0,
            top_p=kwargs.get("top_p", self.top_p),
            seed=kwargs.get("seed", self.seed),
            stop=tuple(stop if stop is not None else (self.stop or ())),
        )
        specs = tuple(ToolSpec.from_any(t) for t in kwargs.get("tools") or ())
        choice = ToolChoice.parse(kwargs.get("tool_choice"), specs) if specs else None
        response_format = kwargs.get("response_format")

        budget = 0  # tokens the constrained JSON may need at most
        prompt_tools: tuple[ToolSpec, ...] = ()
        mode: Literal["text", "auto", "forced", "json"] = "text"
        grammar = None
        prefix = ""
        call_name = None
        factory = _grammar_factory(engine)
        if choice is not None and choice.mode != "none":
            prompt_tools = specs
            if choice.mode == "auto":
                mode, grammar = "auto", factory.optional_calls(specs)
            else:
                mode = "forced"
                chosen = [t for t in specs if choice.mode == "any" or t.name == choice.name]
                if len(chosen) == 1:
                    # The name is decided: put it in the prompt, constrain only the arguments.
                    call_name = chosen[0].name
                    prefix = f'{CALL_OPEN}\n{{"name": "{call_name}", "arguments": '
                    schema = self._bounded(chosen[0].parameters)
                else:
                    prefix = f"{CALL_OPEN}\n"
                    schema = self._bounded(call_schema(chosen))
                grammar, budget = factory.json_schema(schema), worst_case_tokens(schema)
        elif response_format is not None:
            mode = "json"
            if response_format.get("type") == "json_schema":
                schema = response_format.get("schema") or response_format.get(
                    "json_schema", {}
                ).get("schema")
                bounded = self._bounded(schema)
                grammar, budget = factory.json_schema(bounded), worst_case_tokens(bounded)
            else:  # JSON mode: any JSON object (as "json_object" means elsewhere)
                bounded = self._bounded({"type": "object"})
                grammar, budget = factory.json_schema(bounded), self.min_call_tokens

        template = to_template_messages(messages, prompt_tools)
        prompt_ids = engine.encode(template)
        if prefix:
            prefix_ids = engine.tokenizer(prefix, add_special_tokens=False)["input_ids"]
            prompt_ids = prompt_ids + prefix_ids
        request = Request(
            messages=tuple(to_policy_messages(messages)),
            prompt=prompt_ids,
            probe_offset=probe_offset(engine.encode, messages, prompt_tools, prompt_ids),
            profile=identity.profile,
            context=identity.context,
            session_id=identity.session_id,
            request_id=identity.request_id or uuid.uuid4().hex,
        )
        processor = GrammarProcessor(grammar, factory.vocab_size) if grammar else None
        if processor is not None and mode in ("forced", "json"):
            # Constrained JSON must not be cut by a stop string, nor by a budget smaller than
            # the bounded schema needs.
            params = params.model_copy(update={"stop": (), "max_new_tokens": max(
                params.max_new_tokens, self.min_call_tokens, budget + 1  # +1: end of turn
            )})
        call = _Call(
            request, params, model_name, mode, specs, call_name, processor,
            kwargs.get("timeout", self.timeout),
        )
        return pipe, call

    def _bounded(self, schema: dict[str, Any]) -> dict[str, Any]:
        return bound_schema(schema, self.max_string_chars, self.max_array_items)

    # building messages --------------------------------------------------------------------

    def _outputs(self, call: _Call, text: str) -> tuple[str, list, list]:
        """(content, tool_calls, invalid_tool_calls) from the generated text."""
        if call.mode == "forced":
            parsed = parse_call_json(text.strip(), call.call_name)
            return ("", [parsed], []) if parsed.get("type") == "tool_call" else ("", [], [parsed])
        if call.mode == "auto":
            content, rest = split_content(text)
            calls, invalid = parse_calls(rest)
            return content, calls, invalid
        return text, [], []

    def _metadata(self, call: _Call, turn: Turn, has_calls: bool) -> dict[str, Any]:
        result = turn.result
        finish = result.finish_reason if result is not None else "cancelled"
        if has_calls and finish == "stop":
            finish = "tool_calls"
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
            "activation_scores": dict(turn.activation_scores),
            "failed_closed": d.failed_closed,
            "audit_ids": list(turn.audit_ids),
            "outcome": turn.outcome,
        }
        if call.grammar is not None:
            meta["grammar"] = {
                "backend": BACKEND,
                "ms_per_token": round(call.grammar.ms_per_token, 3),
            }
        return {"model_name": call.model_name, "finish_reason": finish, "steerguard": meta}

    @staticmethod
    def _usage(turn: Turn) -> dict[str, int]:
        r = turn.result
        i, o = (r.prompt_tokens, r.completion_tokens) if r is not None else (0, 0)
        return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}

    def _check_timeout(self, call: _Call) -> None:
        if call.timed_out:
            raise TimeoutError(f"generation took longer than timeout={call.timeout} s")

    @contextlib.contextmanager
    def _deadline(self, call: _Call) -> Iterator[None]:
        timer = None
        if call.timeout is not None:

            def expire() -> None:
                call.timed_out = True
                call.cancel.set()

            timer = threading.Timer(call.timeout, expire)
            timer.daemon = True
            timer.start()
        try:
            yield
        finally:
            if timer is not None:
                timer.cancel()

    # generation ---------------------------------------------------------------------------

    def _run(self, pipe: SteeringPipeline, call: _Call) -> Turn:
        attempts = max(0, self.max_retries) + 1
        for attempt in range(attempts):
            try:
                with self._deadline(call):
                    return pipe.run(
                        call.request, call.params,
                        logits_processor=call.grammar, cancel=call.cancel,
                    )
            except torch.OutOfMemoryError:
                if attempt == attempts - 1:
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        raise AssertionError("unreachable")

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        pipe, call = self._prepare(messages, stop, kwargs)
        turn = self._run(pipe, call)
        self._check_timeout(call)
        return self._result(call, turn)

    def _result(self, call: _Call, turn: Turn) -> ChatResult:
        text = turn.result.text if turn.result is not None else ""
        content, calls, invalid = self._outputs(call, text)
        message = AIMessage(
            content=content,
            tool_calls=calls,
            invalid_tool_calls=invalid,
            usage_metadata=self._usage(turn),  # type: ignore[arg-type]
            response_metadata=self._metadata(call, turn, bool(calls)),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        pipe, call = await run_in_executor(None, self._prepare, messages, stop, kwargs)
        try:
            # The engine runs in a worker thread; cancelling this task stops it at the next
            # token (and the audit log records the request as cancelled).
            turn = await asyncio.shield(run_in_executor(None, self._run, pipe, call))
        except asyncio.CancelledError:
            call.cancel.set()
            raise
        self._check_timeout(call)
        return self._result(call, turn)

    def _chunks(self, pipe: SteeringPipeline, call: _Call) -> Iterator[ChatGenerationChunk]:
        """Content deltas token by token, then one last chunk with tool calls, usage and
        metadata. Closing this iterator cancels generation (audited as cancelled)."""
        items = pipe.run_stream(
            call.request, call.params, logits_processor=call.grammar, cancel=call.cancel
        )
        text = emitted = ""
        turn: Turn | None = None
        with self._deadline(call), contextlib.closing(items):
            for item in items:
                if isinstance(item, Turn):
                    turn = item
                    break
                text += item[0]
                if call.mode == "forced":
                    continue  # the call arrives whole, in the last chunk
                visible = safe_prefix(text) if call.mode == "auto" else text
                delta, emitted = visible[len(emitted):], visible
                if delta:
                    yield ChatGenerationChunk(message=AIMessageChunk(content=delta))
        self._check_timeout(call)
        assert turn is not None
        content, calls, invalid = self._outputs(call, turn.result.text if turn.result else "")
        chunks = [
            tool_call_chunk(name=c["name"], args=_dumps(c["args"]), id=c["id"], index=n)
            for n, c in enumerate(calls)
        ] + [
            tool_call_chunk(name=c["name"], args=c["args"], id=c["id"], index=len(calls) + n)
            for n, c in enumerate(invalid)
        ]
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content=content[len(emitted):] if content.startswith(emitted) else "",
                tool_call_chunks=chunks,
                usage_metadata=self._usage(turn),  # type: ignore[arg-type]
                response_metadata=self._metadata(call, turn, bool(calls)),
                chunk_position="last",
            )
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        pipe, call = self._prepare(messages, stop, kwargs)
        with contextlib.closing(self._chunks(pipe, call)) as chunks:
            for chunk in chunks:
                if run_manager is not None:
                    run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
                yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        loop = asyncio.get_running_loop()
        pipe, call = await run_in_executor(None, self._prepare, messages, stop, kwargs)
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop may be gone after a cancel
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def produce() -> None:
            try:
                with contextlib.closing(self._chunks(pipe, call)) as chunks:
                    for chunk in chunks:
                        put("chunk", chunk)
                        if call.cancel.is_set() and not call.timed_out:
                            break  # consumer left: closing records the request cancelled
            except BaseException as exc:  # handed to the consumer
                put("error", exc)
            finally:
                put("done", None)

        worker = asyncio.ensure_future(run_in_executor(None, produce))
        finished = False
        try:
            while True:
                kind, value = await queue.get()
                if kind == "done":
                    finished = True
                    break
                if kind == "error":
                    finished = True
                    raise value
                if run_manager is not None:
                    await run_manager.on_llm_new_token(str(value.message.content), chunk=value)
                yield value
        finally:
            if not finished:
                call.cancel.set()  # consumer stopped early or was cancelled
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(worker), timeout=30)


def _dumps(args: Mapping[str, Any]) -> str:
    import json

    return json.dumps(dict(args), ensure_ascii=False)
