"""The FastAPI app: OpenAI-compatible chat completions over the composition root.

A thin shell: it reads the wire format, prepares the call with steerguard.chat (the same
preparation the LangChain chat model uses), hands it to a scheduler, and writes the answer.
Who the user is comes only from the `steerguard` extra body object.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

import torch
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages import ToolMessage as LCToolMessage
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from steerguard.audit.errors import AuditUnavailableError
from steerguard.chat.call import ChatCall, RequestIdentity, prepare_call
from steerguard.chat.modes import Bounds, Outputs
from steerguard.config import ServerConfig
from steerguard.errors import PlanError
from steerguard.pipeline import PolicyFailedClosed, SteeringPipeline, Turn
from steerguard.policy.errors import ProfileError
from steerguard.policy.inputs import RequestContext, UserProfile
from steerguard.root import Steerguard
from steerguard.runtime.batching import BatcherClosed, BatcherFull
from steerguard.runtime.engine import GenerationParams
from steerguard.runtime.plan import SteeringPlan
from steerguard.server import protocol as p
from steerguard.server.errors import (
    ApiError,
    Problem,
    field_path,
    install_handlers,
)
from steerguard.server.keys import KeyRing, Principal, require_scope
from steerguard.server.metrics import ServerMetrics
from steerguard.server.scheduler import QueueFull, Scheduler, ThreadScheduler

log = logging.getLogger("steerguard.server")


class _State:
    """What the app knows about its model: loading, ready, or failed to load."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.error: str | None = None
        self.pipeline: SteeringPipeline | None = None


def create_app(
    root: Steerguard,
    *,
    keys: KeyRing | None = None,
    scheduler: Scheduler | None = None,
    settings: ServerConfig | None = None,
    routers: Sequence[APIRouter] = (),
    load: bool = True,
) -> FastAPI:
    """The server app on `root`. `routers` are mounted as they are (the oversight API): they
    guard their routes with `steerguard.server.keys.require_scope(...)` and reach the root
    (its audit log, policy) as `request.app.state.root`. The model loads in the background
    when the app starts (`load`); /healthz answers 503 until then."""
    settings = settings or root.config.server
    keys = keys if keys is not None else KeyRing()
    state = _State()
    chosen: Scheduler = scheduler or _default_scheduler(root, settings)

    def load_model() -> None:
        try:
            state.pipeline = root.pipeline()
            if root.config.backend == "hf":
                root.grammar()  # compiled once, before the first constrained request
            state.ready.set()
            log.info("model %s loaded; serving", root.model)
        except Exception as exc:  # reported by /healthz, never raised into the server
            state.error = f"{type(exc).__name__}: {exc}"
            log.error("could not load the model: %s", state.error)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = None
        if load:
            loader = threading.Thread(target=load_model, name="steerguard-load", daemon=True)
            loader.start()
        yield
        await chosen.close()

    app = FastAPI(
        title="steerguard", version="1", lifespan=lifespan,
        description="OpenAI-compatible chat completions, steered per request by policy and "
        "audited. Identity travels in the `steerguard` body object.",
    )
    app.state.keys = keys
    app.state.root = root
    app.state.scheduler = chosen
    app.state.settings = settings
    app.state.loaded = state
    app.state.metrics = metrics = ServerMetrics(
        lambda: chosen.queue_depth, lambda: getattr(chosen, "active_rows", 0)
    )
    if hasattr(chosen, "observe_batch"):
        chosen.observe_batch(metrics.batch_size.record)  # type: ignore[attr-defined]
    install_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if not load:
        state.pipeline = root.pipeline()
        state.ready.set()

    def ready_pipeline() -> SteeringPipeline:
        if state.pipeline is None or not state.ready.is_set():
            detail = (f"the model failed to load: {state.error}" if state.error
                      else "the model is still loading")
            raise ApiError(503, "not ready", detail, headers={"Retry-After": "5"})
        return state.pipeline

    @app.get("/healthz", response_model=p.Health, responses={503: {"model": Problem}})
    def healthz() -> Any:
        if not state.ready.is_set():
            detail = (f"the model failed to load: {state.error}" if state.error
                      else f"loading {root.model}")
            return ApiError(503, "not ready", detail, headers={"Retry-After": "5"}).response()
        return p.Health(status="ok", model=root.model, bundle=_bundle(root),
                        queue_depth=chosen.queue_depth)

    @app.get("/v1/models", response_model=p.ModelList, responses=_ERRORS)
    def models(_: Annotated[Principal, Depends(require_scope("chat"))]) -> p.ModelList:
        return p.ModelList(data=[p.ModelCard(id=root.model, created=_STARTED)])

    @app.get("/metrics", response_class=Response, include_in_schema=False)
    def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/chat/completions",
        response_model=p.ChatCompletion,
        responses={**_ERRORS, 200: {"content": {"text/event-stream": {}}}},
    )
    async def chat_completions(
        body: p.ChatCompletionRequest,
        request: Request,
        who: Annotated[Principal, Depends(require_scope("chat"))],
    ) -> Any:
        received = time.perf_counter()
        pipe = ready_pipeline()
        if body.model != root.model:
            raise ApiError(400, "unknown model", f"model {body.model!r} is not served",
                           field="model", expected=f"{root.model!r} (see /v1/models)")
        explicit = _explicit_plan(body, who, pipe)
        call = await asyncio.to_thread(_prepare, root, pipe, body, settings, explicit, who)
        items = chosen.stream(pipe, call)
        try:
            first = await _first(items)
        except BaseException:
            await items.aclose()
            raise
        if first is not None and not isinstance(first, Turn):
            metrics.ttft.record(time.perf_counter() - received)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            sse = _sse(items, first, call, completion_id, include_usage, metrics, received)
            return StreamingResponse(sse, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        turn = await _rest(items, first, request)
        metrics.requests.add(1, {"status": 200})
        return _completion(call, turn, completion_id)

    for router in routers:
        app.include_router(router)
    return app


_STARTED = int(time.time())
_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": Problem, "content": {"application/problem+json": {}}}
    for s in (400, 401, 403, 413, 429, 503)
}


def _default_scheduler(root: Steerguard, settings: ServerConfig) -> Scheduler:
    # vLLM batches concurrent requests itself: calls only need threads of their own.
    if settings.scheduler == "threads" or root.config.backend == "vllm":
        return ThreadScheduler(concurrency=settings.max_batch, max_queue=settings.max_queue)
    from steerguard.server.batching import BatchingScheduler

    return BatchingScheduler(max_batch=settings.max_batch, max_queue=settings.max_queue)


def _bundle(root: Steerguard) -> str | None:
    try:
        ref = root.policy.ref
    except Exception:  # a bundle that no longer loads is reported by requests, not health
        return None
    return f"{ref.name}@{ref.revision}"


# preparing ------------------------------------------------------------------------------------


def _explicit_plan(
    body: p.ChatCompletionRequest, who: Principal, pipe: SteeringPipeline
) -> SteeringPlan | None:
    sg = body.steerguard
    if sg is None or sg.plan is None:
        return None
    if not who.allows("steer"):
        raise ApiError(403, "scope missing",
                       f"an explicit plan needs a key with the 'steer' scope; key {who.name!r} "
                       f"has {', '.join(sorted(who.scopes))}", field="steerguard.plan")
    try:
        plan = SteeringPlan.model_validate(sg.plan)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise ApiError(400, "invalid plan",
                       f"{field_path(('steerguard', 'plan', *e['loc']))}: {e['msg']}",
                       field=field_path(("steerguard", "plan", *e["loc"])),
                       expected="{'interventions': [{vector, layers, strength, op, positions}]}"
                       ) from None
    engine = pipe.engine
    known = sorted(engine.vectors)
    layers = engine.fingerprint.num_layers
    for n, iv in enumerate(plan.interventions):
        where = f"steerguard.plan.interventions[{n}]"
        if iv.vector not in engine.vectors:
            raise ApiError(400, "unknown vector", f"vector {iv.vector!r} is not loaded",
                           field=f"{where}.vector", expected=f"one of {', '.join(known)}")
        bad = [x for x in iv.layers if x >= layers]
        if bad:
            raise ApiError(400, "layer out of range", f"layers {bad} do not exist",
                           field=f"{where}.layers", expected=f"layers 0-{layers - 1}")
        missing = [x for x in iv.layers if x not in engine.vectors[iv.vector].directions]
        if missing:
            raise ApiError(400, "layer without direction",
                           f"vector {iv.vector!r} has no direction for layers {missing}",
                           field=f"{where}.layers",
                           expected=f"layers of {iv.vector!r}: "
                           f"{list(engine.vectors[iv.vector].layers)}")
    return plan


def _identity(body: p.ChatCompletionRequest) -> RequestIdentity:
    sg = body.steerguard
    if sg is None:
        return RequestIdentity()
    try:
        profile = UserProfile.model_validate(sg.profile) if sg.profile is not None else None
    except ValidationError as exc:
        raise _invalid("steerguard.profile", exc, "a user profile (user_id, age_band, "
                       "preferences, consent, and fields the bundle declares)") from None
    try:
        context = RequestContext.model_validate(sg.context) if sg.context is not None else None
    except ValidationError as exc:
        raise _invalid("steerguard.context", exc, "a request context (channel, locale, ...)"
                       ) from None
    return RequestIdentity(profile, sg.session_id, context, sg.request_id)


def _invalid(where: str, exc: ValidationError, expected: str) -> ApiError:
    e = exc.errors()[0]
    path = field_path((where, *e["loc"]))
    return ApiError(400, "invalid request body", f"{path}: {e['msg']}", field=path,
                    expected=expected)


def _messages(body: p.ChatCompletionRequest) -> list[BaseMessage]:
    out: list[BaseMessage] = []
    for n, m in enumerate(body.messages):
        text = _text(m.content) if m.content is not None else ""
        if isinstance(m, p.SystemMessage):
            out.append(SystemMessage(text))
        elif isinstance(m, p.UserMessage):
            out.append(HumanMessage(text))
        elif isinstance(m, p.AssistantMessage):
            calls = []
            for k, c in enumerate(m.tool_calls or ()):
                try:
                    args = json.loads(c.function.arguments or "{}")
                except ValueError:
                    args = None
                if not isinstance(args, dict):
                    raise ApiError(
                        400, "invalid tool call", "the arguments are not a JSON object",
                        field=f"messages[{n}].tool_calls[{k}].function.arguments",
                        expected="a JSON object as text, e.g. '{\"order_id\": \"A-1\"}'")
                calls.append({"name": c.function.name, "args": args, "id": c.id,
                              "type": "tool_call"})
            out.append(AIMessage(text, tool_calls=calls))
        else:
            out.append(LCToolMessage(text, tool_call_id=m.tool_call_id))
    return out


def _text(content: str | list[p.TextPart]) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content)


def _prepare(
    root: Steerguard,
    pipe: SteeringPipeline,
    body: p.ChatCompletionRequest,
    settings: ServerConfig,
    explicit: SteeringPlan | None,
    who: Principal,
) -> ChatCall:
    identity = _identity(body)
    wanted = body.max_completion_tokens or body.max_tokens or settings.default_max_tokens
    if wanted > settings.max_tokens:
        name = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise ApiError(400, "too many tokens asked", f"{name}={wanted} is over this server's cap",
                       field=name, expected=f"at most {settings.max_tokens}")
    params = GenerationParams(
        max_new_tokens=wanted,
        temperature=body.temperature or 0.0,
        top_p=body.top_p if body.top_p is not None else 1.0,
        seed=body.seed,
        stop=body.stops,
    )
    tools = [t.model_dump(exclude_none=True) for t in body.tools or ()]
    choice: Any = body.tool_choice
    if isinstance(choice, p.NamedToolChoice):
        choice = choice.function.name
    response_format = None
    if isinstance(body.response_format, p.JsonSchemaFormat):
        schema = body.response_format.json_schema.schema_
        if schema is None:
            raise ApiError(400, "invalid response format", "json_schema has no schema",
                           field="response_format.json_schema.schema",
                           expected="a JSON Schema object")
        response_format = {"type": "json_schema", "schema": schema}
    elif body.response_format is not None:
        response_format = {"type": body.response_format.type}
    if choice is not None and not tools:
        raise ApiError(400, "invalid tool choice", "tool_choice without tools",
                       field="tool_choice", expected="tools to choose from, or no tool_choice")
    try:
        grammars = root.grammar() if tools or response_format else None
    except PlanError as exc:  # constrained output on a backend without logits processors
        field = "tools" if tools else "response_format"
        raise ApiError(400, "unsupported on this backend", str(exc), field=field,
                       expected=f"no {field} on the {root.config.backend} backend") from None
    try:
        call = prepare_call(
            pipe, grammars, _messages(body), params, model_name=root.model,
            identity=identity, tools=tools, tool_choice=choice,
            response_format=response_format,
            bounds=Bounds(settings.max_string_chars, settings.max_array_items),
            timeout=settings.request_timeout_s,
        )
    except ApiError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ApiError(400, "invalid request", str(exc), field=_guess_field(str(exc)),
                       expected="options that fit together (see detail)") from None
    if explicit is not None:
        call.request = dataclasses.replace(call.request, explicit_plan=explicit,
                                           explicit_by=who.name)
    return call


def _guess_field(message: str) -> str:
    for name in ("tool_choice", "response_format", "tools", "messages"):
        if name in message:
            return name
    return "messages" if "message" in message or "block" in message else "body"


# generating -----------------------------------------------------------------------------------


Item = str | Turn


async def _first(items: AsyncIterator[Item]) -> Item | None:
    """The first delta (or the Turn): planning errors surface here, before any response
    status is sent."""
    try:
        return await anext(items)
    except StopAsyncIteration:
        return None
    except BaseException as exc:
        raise _as_api_error(exc) from None


async def _rest(items: AsyncIterator[Item], first: Item | None, request: Request) -> Turn:
    """Drain the stream for a non-streaming answer, cancelling if the client goes away."""
    if isinstance(first, Turn):
        return first

    async def drain() -> Turn:
        async for item in items:
            if isinstance(item, Turn):
                return item
        raise ApiError(503, "no answer", "generation ended without a result")

    task = asyncio.ensure_future(drain())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                break
        return await task
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        raise _as_api_error(exc) from None
    finally:
        if not task.done():
            task.cancel()
        await items.aclose()


def _as_api_error(exc: BaseException) -> BaseException:
    if isinstance(exc, ApiError | asyncio.CancelledError):
        return exc
    if isinstance(exc, QueueFull):
        return ApiError(429, "queue full", str(exc),
                        headers={"Retry-After": str(max(1, round(exc.retry_after_s)))})
    if isinstance(exc, BatcherFull):
        return ApiError(429, "queue full", str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, BatcherClosed):
        return ApiError(503, "shutting down", str(exc), headers={"Retry-After": "5"})
    if isinstance(exc, AuditUnavailableError):
        return ApiError(503, "audit unavailable",
                        f"not answering: the audit log cannot keep this request's record "
                        f"({exc})", headers={"Retry-After": "5"})
    if isinstance(exc, ProfileError):
        return ApiError(400, "invalid profile", str(exc), field="steerguard.profile",
                        expected="only fields the policy bundle declares, with their types")
    if isinstance(exc, PlanError):
        return ApiError(400, "invalid plan", str(exc), field="steerguard.plan")
    if isinstance(exc, PolicyFailedClosed):
        return ApiError(503, "policy failed closed", str(exc))
    if isinstance(exc, TimeoutError):
        return ApiError(503, "timed out", str(exc), headers={"Retry-After": "1"})
    if isinstance(exc, torch.OutOfMemoryError):
        return ApiError(503, "out of memory", "the model ran out of memory; retry",
                        headers={"Retry-After": "1"})
    if isinstance(exc, ValueError):
        return ApiError(400, "invalid request", str(exc))
    return exc


def _usage(turn: Turn) -> p.Usage:
    r = turn.result
    i, o = (r.prompt_tokens, r.completion_tokens) if r is not None else (0, 0)
    return p.Usage(prompt_tokens=i, completion_tokens=o, total_tokens=i + o)


def _finish(call: ChatCall, turn: Turn, outputs: Outputs) -> p.FinishReason:
    reason = call.finish_reason(turn, outputs)
    return reason if reason in ("stop", "length", "tool_calls") else "stop"  # type: ignore


def _tool_calls(outputs: Outputs) -> list[p.ResponseToolCall]:
    out = [p.ResponseToolCall(id=c["id"] or "", function=p.FunctionCall(
        name=c["name"], arguments=json.dumps(c["args"], ensure_ascii=False)))
        for c in outputs.tool_calls]
    out += [p.ResponseToolCall(id=c["id"] or "", function=p.FunctionCall(
        name=c["name"] or "", arguments=c["args"] or "")) for c in outputs.invalid_tool_calls]
    return out


def _steerguard(call: ChatCall, turn: Turn) -> p.SteerguardResult:
    meta = call.metadata(turn)
    meta["plan"] = meta.pop("vectors")
    return p.SteerguardResult.model_validate(meta)


def _completion(call: ChatCall, turn: Turn, completion_id: str) -> p.ChatCompletion:
    outputs = call.outputs(turn)
    calls = _tool_calls(outputs)
    return p.ChatCompletion(
        id=completion_id, created=int(time.time()), model=call.model_name,
        choices=[p.Choice(message=p.ResponseMessage(
            content=outputs.content if outputs.content or not calls else None,
            tool_calls=calls or None), finish_reason=_finish(call, turn, outputs))],
        usage=_usage(turn), steerguard=_steerguard(call, turn),
    )


async def _sse(
    items: AsyncIterator[Item],
    first: Item | None,
    call: ChatCall,
    completion_id: str,
    include_usage: bool,
    metrics: ServerMetrics,
    received: float,
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(delta: p.Delta, finish: p.FinishReason | None = None, **extra: Any) -> str:
        body = p.ChatCompletionChunk(id=completion_id, created=created, model=call.model_name,
                                     choices=[p.ChunkChoice(delta=delta, finish_reason=finish)],
                                     **extra)
        return f"data: {body.model_dump_json(exclude_none=True)}\n\n"

    turn: Turn | None = None
    emitted = ""
    try:
        yield chunk(p.Delta(role="assistant", content=""))
        pending = [first] if first is not None else []
        async for item in _chain(pending, items):
            if isinstance(item, Turn):
                turn = item
                break
            emitted += item
            yield chunk(p.Delta(content=item))
        if turn is None:
            raise ApiError(503, "no answer", "generation ended without a result")
        outputs = call.outputs(turn)
        calls = _tool_calls(outputs)
        deltas = [p.DeltaToolCall(index=k, id=c.id, type="function",
                                  function={"name": c.function.name,
                                            "arguments": c.function.arguments})
                  for k, c in enumerate(calls)]
        meta = _steerguard(call, turn)
        # Content the stream filter held back (a partial tag that turned out to be text).
        content = outputs.content
        rest = content[len(emitted):] if content.startswith(emitted) else ""
        yield chunk(p.Delta(content=rest or None, tool_calls=deltas or None),
                    _finish(call, turn, outputs), steerguard=meta)
        if include_usage:
            body = p.ChatCompletionChunk(id=completion_id, created=created,
                                         model=call.model_name, choices=[], usage=_usage(turn),
                                         steerguard=meta)
            yield f"data: {body.model_dump_json(exclude_none=True)}\n\n"
        yield "data: [DONE]\n\n"
        metrics.requests.add(1, {"status": 200})
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # after the status line: report in-band, as OpenAI does
        err = _as_api_error(exc)
        if not isinstance(err, ApiError):
            log.exception("stream failed")
            err = ApiError(503, "service unavailable", "the stream failed; retry")
        payload = {"error": {"message": err.detail, "type": err.title, "code": err.status,
                             "param": err.field}}
        yield f"data: {json.dumps(payload)}\n\n"
    finally:
        await items.aclose()


async def _chain(first: list[Item], rest: AsyncIterator[Item]) -> AsyncIterator[Item]:
    for item in first:
        yield item
    async for item in rest:
        yield item


class BodyLimit:
    """413 for a body over `limit` bytes, by Content-Length or as it streams in."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._too_large(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise StarletteHTTPException(413, f"the body is over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = ApiError(413, "request body too large",
                            f"the body is over {self.limit} bytes", field="body",
                            expected=f"at most {self.limit} bytes").response()
        await response(scope, receive, send)

