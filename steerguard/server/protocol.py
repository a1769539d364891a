"""The OpenAI chat-completions wire format, as the server reads and writes it, plus the
`steerguard` extra body object (who the user is) and the `steerguard` response object (what
was decided and audited)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_STRICT = ConfigDict(extra="forbid")
_OPEN = ConfigDict(extra="allow")


# request --------------------------------------------------------------------------------------


class TextPart(BaseModel):
    model_config = _STRICT

    type: Literal["text"]
    text: str


Content = str | list[TextPart]


class SystemMessage(BaseModel):
    model_config = _STRICT

    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(BaseModel):
    model_config = _STRICT

    role: Literal["user"]
    content: Content
    name: str | None = None


class FunctionCall(BaseModel):
    model_config = _STRICT

    name: str = Field(min_length=1)
    arguments: str = Field(description="the arguments as a JSON object text")


class ToolCall(BaseModel):
    model_config = _STRICT

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(BaseModel):
    model_config = _STRICT

    role: Literal["assistant"]
    content: Content | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None


class ToolMessage(BaseModel):
    model_config = _STRICT

    role: Literal["tool"]
    content: Content
    tool_call_id: str = Field(min_length=1)


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDef(BaseModel):
    model_config = _STRICT

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = _STRICT

    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = _STRICT

    name: str = Field(min_length=1)


class NamedToolChoice(BaseModel):
    model_config = _STRICT

    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextFormat(BaseModel):
    model_config = _STRICT

    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    model_config = _STRICT

    type: Literal["json_object"]


class JsonSchemaFormat(BaseModel):
    model_config = _STRICT

    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class StreamOptions(BaseModel):
    model_config = _STRICT

    include_usage: bool = False


class Steerguard(BaseModel):
    """Who the user is, from the calling backend (never from the messages); `plan` needs a
    key with the `steer` scope."""

    model_config = _STRICT

    profile: dict[str, Any] | None = None
    session_id: str | None = Field(default=None, max_length=256)
    context: dict[str, Any] | None = None
    request_id: str | None = Field(default=None, min_length=1, max_length=256)
    plan: dict[str, Any] | None = Field(
        default=None,
        description="An explicit steering plan ({'interventions': [...]}) instead of the "
        "policy's; only for keys with the `steer` scope, audited as explicit.",
    )


class ChatCompletionRequest(BaseModel):
    model_config = _STRICT

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: Literal[1] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    user: str | None = Field(default=None, description="Ignored: identity comes in `steerguard`.")
    # Accepted at their neutral values only: the engine does not implement them.
    frequency_penalty: Literal[0, 0.0] | None = None
    presence_penalty: Literal[0, 0.0] | None = None
    logprobs: Literal[False] | None = None
    steerguard: Steerguard | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes at most 4 non-empty strings")
        return value

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


# response -------------------------------------------------------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class SteerguardVector(BaseModel):
    model_config = _OPEN

    vector: str
    strength: float
    layers: list[int]
    op: str
    positions: str
    rule: str | None = None


class SteerguardResult(BaseModel):
    """What steerguard did for this request."""

    model_config = _OPEN

    decision_id: str
    request_id: str
    bundle: str
    rules: list[str]
    plan: list[SteerguardVector]
    explicit: bool = False
    explanation: str
    audit_ids: list[str]
    outcome: str
    failed_closed: bool = False
    activation_scores: dict[str, float] = Field(default_factory=dict)


class ResponseToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ResponseToolCall] | None = None
    refusal: None = None


FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: FinishReason
    logprobs: None = None


class _Completion(BaseModel):
    """What a whole answer and each of its stream chunks share."""

    id: str
    created: int
    model: str


class ChatCompletion(_Completion):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    steerguard: SteerguardResult


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, str] | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(_Completion):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None
    steerguard: SteerguardResult | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "steerguard"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "loading"]
    model: str
    bundle: str | None = None
    queue_depth: int = 0
