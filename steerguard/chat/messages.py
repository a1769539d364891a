"""LangChain messages -> what the model sees (chat-template messages) and what the policy
engine reads (ChatMessage, with the agent's tool calls, results and errors)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages import (
    ChatMessage as LCChatMessage,
)

from steerguard.chat.tools import ToolSpec, render_call, render_result, tools_system_prompt
from steerguard.policy.inputs import ChatMessage, ToolCall

TemplateMessage = dict[str, str]
_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant",
          "system": "system", "developer": "system", "tool": "tool", "function": "tool"}


def text_of(content: str | list[Any], *, strict: bool) -> str:
    """The text of a message's content; other blocks (images, files) are refused when
    `strict` (a text-only model must not silently drop what the user sent)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") in ("tool_use", "tool_call"):
            continue  # duplicated in AIMessage.tool_calls, rendered from there
        elif strict:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ValueError(f"steerguard runs a text-only model; cannot take a {kind!r} block")
    return "".join(parts)


def _role(message: BaseMessage) -> str:
    if isinstance(message, LCChatMessage):
        role = _ROLES.get(message.role)
        if role is None:
            raise ValueError(f"unknown chat message role {message.role!r}")
        return role
    role = _ROLES.get(message.type)
    if role is None:
        raise ValueError(f"unsupported message type {type(message).__name__}")
    return role


def to_policy_messages(messages: Sequence[BaseMessage]) -> list[ChatMessage]:
    """The conversation as the policy engine reads it, tool state included."""
    names: dict[str, str] = {}  # tool_call_id -> tool name, to name the results
    out: list[ChatMessage] = []
    for m in messages:
        role = _role(m)
        content = text_of(m.content, strict=False)
        if isinstance(m, AIMessage):
            calls = tuple(ToolCall(name=c["name"], args=c["args"], id=c.get("id"))
                          for c in m.tool_calls)
            names.update({c.id: c.name for c in calls if c.id})
            out.append(ChatMessage(role="assistant", content=content, tool_calls=calls))
        elif role == "tool":
            call_id = getattr(m, "tool_call_id", None)
            name = m.name or (names.get(call_id) if call_id else None)
            status = getattr(m, "status", None)
            out.append(ChatMessage(role="tool", content=content, name=name,
                                   status=status if status in ("success", "error") else None))
        else:
            out.append(ChatMessage(role=role, content=content))  # type: ignore[arg-type]
    return out


def to_template_messages(
    messages: Sequence[BaseMessage], tools: Sequence[ToolSpec] = ()
) -> list[TemplateMessage]:
    """Messages for the model's chat template, tool use spelled out (see tools.py).

    Consecutive tool results become one user turn, so the assistant answers once for them.
    """
    out: list[TemplateMessage] = []
    names: dict[str, str] = {}
    for m in messages:
        role = _role(m)
        if isinstance(m, AIMessage):
            text = text_of(m.content, strict=False)
            calls = [render_call(c["name"], c["args"]) for c in m.tool_calls]
            for c in m.tool_calls:
                if c.get("id"):
                    names[c["id"]] = c["name"]
            out.append({"role": "assistant", "content": "\n".join(p for p in [text, *calls] if p)})
        elif isinstance(m, ToolMessage | FunctionMessage) or role == "tool":
            call_id = getattr(m, "tool_call_id", None)
            name = m.name or (names.get(call_id) if call_id else None)
            body = render_result(name, text_of(m.content, strict=False),
                                 getattr(m, "status", None))
            if out and out[-1]["role"] == "user" and out[-1].get("_tool") == "1":
                out[-1]["content"] += "\n" + body
            else:
                out.append({"role": "user", "content": body, "_tool": "1"})
        elif isinstance(m, SystemMessage) or role == "system":
            out.append({"role": "system", "content": text_of(m.content, strict=True)})
        elif isinstance(m, HumanMessage) or role == "user":
            out.append({"role": "user", "content": text_of(m.content, strict=True)})
        else:
            out.append({"role": role, "content": text_of(m.content, strict=True)})
    if tools:
        prompt = tools_system_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return [{"role": m["role"], "content": m["content"]} for m in out]


def probe_offset(
    encode: Callable[[list[TemplateMessage]], list[int]],
    messages: Sequence[BaseMessage],
    tools: Sequence[ToolSpec],
    prompt_ids: Sequence[int],
) -> int:
    """Tokens of `prompt_ids` after the point where activation probes should read.

    Conditions are calibrated on a user message followed by the assistant's turn opening, so
    probes read there: at the latest human message's end, even when tool calls and results
    follow it in an agent loop (rendered, those start with that same turn opening). When the
    shorter rendering is not a token prefix of the prompt (a template that rewrites earlier
    turns), probes read the prompt's last token instead.
    """
    last_human = max(
        (i for i, m in enumerate(messages) if _ROLES.get(m.type) == "user"
         or (isinstance(m, LCChatMessage) and _ROLES.get(m.role) == "user")),
        default=None,
    )
    if last_human is None:
        return 0
    head = encode(to_template_messages(messages[: last_human + 1], tools))
    if len(head) <= len(prompt_ids) and list(prompt_ids[: len(head)]) == head:
        return len(prompt_ids) - len(head)
    return 0
