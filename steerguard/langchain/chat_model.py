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
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

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

from steerguard.chat.bridge import stream_in_thread
from steerguard.chat.call import (
    ChatCall,
    RequestIdentity,
    prepare_call,
    run_call,
    stream_call,
)
from steerguard.chat.modes import Bounds, Outputs
from steerguard.chat.tools import ToolChoice, ToolSpec
from steerguard.pipeline import SteeringPipeline, Turn
from steerguard.policy.inputs import RequestContext, UserProfile
from steerguard.root import Steerguard
from steerguard.runtime.engine import GenerationParams, SteeringEngine
from steerguard.runtime.loading import BUNDLED

IDENTITY_KWARG = "_steerguard_identity"
PROFILE_KEY = "steerguard_profile"
SESSION_KEY = "session_id"
CONTEXT_KEY = "request_context"
REQUEST_ID_KEY = "request_id"


def identity_from_config(config: RunnableConfig | None) -> RequestIdentity:
    """Trusted per-request facts from the runnable config's `configurable` section."""
    configurable = ensure_config(config).get("configurable") or {}
    profile = configurable.get(PROFILE_KEY)
    if isinstance(profile, Mapping):
        profile = UserProfile.model_validate(profile)
    context = configurable.get(CONTEXT_KEY)
    if isinstance(context, Mapping):
        context = RequestContext.model_validate(context)
    session = configurable.get(SESSION_KEY) or configurable.get("thread_id")
    request_id = configurable.get(REQUEST_ID_KEY)
    return RequestIdentity(
        profile,
        str(session) if session is not None else None,
        context,
        str(request_id) if request_id is not None else None,
    )


class SteeredChatModel(BaseChatModel):
    """A steered local model for LangChain and LangGraph agents.

    Defaults: the bundled SmolLM2-135M-Instruct, the shipped `support` policy bundle and the
    embedded audit store. Greedy decoding unless `temperature` > 0.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)

    model_name: str = Field(default=BUNDLED, alias="model")
    """Model spec: "smollm2-135m" (bundled), a local directory or a hub id."""
    root: Steerguard | None = Field(default=None, exclude=True)
    """The composition root to run on; None: one made of the parts below and, for the parts
    not given, the process's shared root (`Steerguard.default()`)."""
    engine: SteeringEngine | None = Field(default=None, exclude=True)
    """An existing engine to run on (its vectors are loaded if it has none)."""
    policy: Any = Field(default=None, exclude=True)
    """PolicyEngine, PolicyStore or bundle path; None: the shipped support bundle."""
    audit: Any = Field(default=None, exclude=True)
    """AuditLog; None: the shared root's log (embedded store by default); False: none."""
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

    _own_root: Steerguard | None = PrivateAttr(default=None)

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
        kwargs.setdefault(IDENTITY_KWARG, identity_from_config(config))
        return super().invoke(input, config, **kwargs)

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        kwargs.setdefault(IDENTITY_KWARG, identity_from_config(config))
        return await super().ainvoke(input, config, **kwargs)

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[AIMessageChunk]:
        kwargs.setdefault(IDENTITY_KWARG, identity_from_config(config))
        return super().stream(input, config, **kwargs)

    def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        kwargs.setdefault(IDENTITY_KWARG, identity_from_config(config))
        return super().astream(input, config, **kwargs)

    # resources ----------------------------------------------------------------------------

    def steerguard(self) -> Steerguard:
        """The composition root this model runs on."""
        if self.root is not None:
            return self.root
        parts = (self.engine, self.policy, self.audit, self.concepts_dir)
        shared = Steerguard.default()
        if all(p is None for p in parts) and self.model_name == shared.model:
            return shared
        if self._own_root is None:
            config = shared.config.model_copy(update={"model": self.model_name}
                                              | ({"concepts": self.concepts_dir}
                                                 if self.concepts_dir else {}))
            self._own_root = Steerguard(
                config,
                engine=self.engine or shared.engine(self.model_name),
                policy=self.policy if self.policy is not None else shared.policy_source(),
                audit=self.audit if self.audit is not None else (shared.audit or False),
                telemetry=shared.telemetry,
            )
        return self._own_root

    def pipeline(self, model: str | None = None) -> SteeringPipeline:
        """The pipeline for `model` (default: this model's), built on first use."""
        return self.steerguard().pipeline(model or self.model_name)

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
    ) -> tuple[SteeringPipeline, ChatCall]:
        identity: RequestIdentity = kwargs.pop(IDENTITY_KWARG, None) or RequestIdentity()
        model_name = kwargs.get("model") or self.model_name
        root = self.steerguard()
        pipe = root.pipeline(model_name)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        params = GenerationParams(
            max_new_tokens=max_tokens or 256,
            temperature=kwargs.get("temperature", self.temperature) or 0.0,
            top_p=kwargs.get("top_p", self.top_p),
            seed=kwargs.get("seed", self.seed),
            stop=tuple(stop if stop is not None else (self.stop or ())),
        )
        call = prepare_call(
            pipe, root.grammar(model_name), messages, params,
            model_name=model_name, identity=identity,
            tools=kwargs.get("tools") or (), tool_choice=kwargs.get("tool_choice"),
            response_format=kwargs.get("response_format"),
            bounds=Bounds(self.max_string_chars, self.max_array_items, self.min_call_tokens),
            timeout=kwargs.get("timeout", self.timeout),
        )
        return pipe, call

    # building messages --------------------------------------------------------------------

    def _message(self, call: ChatCall, turn: Turn, outputs: Outputs) -> dict[str, Any]:
        return {
            "usage_metadata": self._usage(turn),
            "response_metadata": {"model_name": call.model_name,
                                  "finish_reason": call.finish_reason(turn, outputs),
                                  "steerguard": call.metadata(turn)},
        }

    @staticmethod
    def _usage(turn: Turn) -> dict[str, int]:
        r = turn.result
        i, o = (r.prompt_tokens, r.completion_tokens) if r is not None else (0, 0)
        return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}

    # generation ---------------------------------------------------------------------------

    def _run(self, pipe: SteeringPipeline, call: ChatCall) -> Turn:
        return run_call(pipe, call, self.max_retries)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        pipe, call = self._prepare(messages, stop, kwargs)
        return self._result(call, self._run(pipe, call))

    def _result(self, call: ChatCall, turn: Turn) -> ChatResult:
        outputs = call.outputs(turn)
        message = AIMessage(
            content=outputs.content,
            tool_calls=outputs.tool_calls,
            invalid_tool_calls=outputs.invalid_tool_calls,
            **self._message(call, turn, outputs),
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
        return self._result(call, turn)

    def _chunks(self, pipe: SteeringPipeline, call: ChatCall) -> Iterator[ChatGenerationChunk]:
        """Content deltas token by token, then one last chunk with tool calls, usage and
        metadata. Closing this iterator cancels generation (audited as cancelled)."""
        emitted = ""
        with contextlib.closing(stream_call(pipe, call)) as items:
            for item in items:
                if isinstance(item, Turn):
                    turn = item
                    break
                emitted += item
                yield ChatGenerationChunk(message=AIMessageChunk(content=item))
        outputs = call.outputs(turn)
        calls, invalid = outputs.tool_calls, outputs.invalid_tool_calls
        chunks = [
            tool_call_chunk(name=c["name"], args=_dumps(c["args"]), id=c["id"], index=n)
            for n, c in enumerate(calls)
        ] + [
            tool_call_chunk(name=c["name"], args=c["args"], id=c["id"], index=len(calls) + n)
            for n, c in enumerate(invalid)
        ]
        content = outputs.content
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content=content[len(emitted):] if content.startswith(emitted) else "",
                tool_call_chunks=chunks,
                chunk_position="last",
                **self._message(call, turn, outputs),
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
        pipe, call = await run_in_executor(None, self._prepare, messages, stop, kwargs)
        async with contextlib.aclosing(stream_in_thread(
            lambda: self._chunks(pipe, call),
            lambda produce: run_in_executor(None, produce),
            call.cancel,
            stop=lambda: call.cancel.is_set() and not call.timed_out,
        )) as chunks:
            async for chunk in chunks:
                if run_manager is not None:
                    await run_manager.on_llm_new_token(str(chunk.message.content), chunk=chunk)
                yield chunk


def _dumps(args: Mapping[str, Any]) -> str:
    import json

    return json.dumps(dict(args), ensure_ascii=False)
