"""What the engine decides on: messages, the user's profile and the request context.

All three come from the application. Messages are untrusted text; the profile and context
are trusted fields, and nothing in a message can change them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Scalar = str | int | float | bool


class ToolCall(BaseModel):
    """A tool call the agent requested (LangChain's `AIMessage.tool_calls` entries)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None


class ChatMessage(BaseModel):
    """One message of the conversation, as the LangChain adapter hands it over."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    name: str | None = Field(default=None, description="Tool name for role 'tool'.")
    tool_calls: tuple[ToolCall, ...] = ()
    status: Literal["success", "error"] | None = Field(
        default=None, description="For role 'tool': whether the tool call failed."
    )


class ToolState(BaseModel):
    """The agent's tool state: what it just asked to call and how the last call went.

    The application may pass it in `RequestContext.tool_state`; otherwise the engine derives
    it from the messages (see `derive_tool_state`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    requested: tuple[str, ...] = Field(default=(), description="Tool names just requested.")
    last_tool: str | None = None
    last_result: str | None = None
    last_failed: bool = False


class UserProfile(BaseModel):
    """Who the user is, from the application (never from the conversation).

    Built-in fields plus any extra fields the bundle declares (passed as keyword arguments);
    `PolicyEngine.decide` validates it against the bundle's declarations.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    user_id: str
    roles: tuple[str, ...] = ()
    age_band: str | None = None
    locale: str | None = None
    preferences: dict[str, Scalar] = Field(default_factory=dict)
    consent: dict[str, bool] = Field(default_factory=dict)


class RequestContext(BaseModel):
    """Facts about this request from the application: channel, locale, tool state, extras."""

    model_config = ConfigDict(frozen=True, extra="allow")

    channel: str | None = None
    locale: str | None = None
    tool_state: ToolState | None = None


def derive_tool_state(messages: list[ChatMessage] | tuple[ChatMessage, ...]) -> ToolState:
    """Tool calls of the last assistant message (unless a user spoke since), and the last result."""
    requested: tuple[str, ...] = ()
    for m in reversed(messages):
        if m.role == "user":
            break
        if m.role == "assistant":
            requested = tuple(c.name for c in m.tool_calls)
            break
    for m in reversed(messages):
        if m.role == "tool":
            return ToolState(
                requested=requested,
                last_tool=m.name,
                last_result=m.content,
                last_failed=m.status == "error",
            )
    return ToolState(requested=requested)
