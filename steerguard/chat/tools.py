"""The tool-calling format steerguard defines for chat templates that have none.

SmolLM2's template only knows roles and content, so tool use is spelled out in text
(the Hermes / Qwen convention, which small ChatML models have seen most):

  system:    the tool list as JSON lines inside <tools> ... </tools>, and how to call one
  assistant: <tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>   (one per call)
  tool:      rendered as a user turn: <tool_response>\\n{"name", "content"[, "status"]}\\n...

Calls are parsed back out of the generated text; grammar.py makes sure a required call is
well formed.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.messages import InvalidToolCall, ToolCall
from langchain_core.utils.function_calling import convert_to_openai_tool

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
_CALL_RE = re.compile(re.escape(CALL_OPEN) + r"(.*?)(?:" + re.escape(CALL_CLOSE) + r"|$)", re.S)

ChoiceMode = Literal["auto", "any", "none", "named"]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]

    @classmethod
    def from_any(cls, tool: Any) -> ToolSpec:
        """A BaseTool, pydantic model, TypedDict, function, or OpenAI-format dict."""
        fn = convert_to_openai_tool(tool)["function"]
        params = dict(fn.get("parameters") or {})
        params.setdefault("type", "object")
        params.setdefault("properties", {})
        return cls(fn["name"], fn.get("description", ""), params)

    def prompt_line(self) -> str:
        return json.dumps(
            {"name": self.name, "description": self.description, "parameters": self.parameters},
            ensure_ascii=False,
        )


@dataclass(frozen=True)
class ToolChoice:
    mode: ChoiceMode
    name: str | None = None

    @classmethod
    def parse(cls, choice: Any, tools: Sequence[ToolSpec]) -> ToolChoice:
        """auto (None), none, any / required / True, a tool name, or an OpenAI-style dict."""
        names = {t.name for t in tools}
        if choice is None or choice == "auto":
            return cls("auto")
        if choice == "none" or choice is False:
            return cls("none")
        if choice in ("any", "required") or choice is True:
            return cls("any")
        if isinstance(choice, Mapping):
            name = (choice.get("function") or {}).get("name") or choice.get("name")
            if not name:
                raise ValueError(f"tool_choice {choice!r} names no tool")
            choice = name
        if isinstance(choice, str):
            if choice not in names:
                raise ValueError(
                    f"tool_choice {choice!r} is not a bound tool (bound: {sorted(names)})"
                )
            return cls("named", choice)
        raise ValueError(f"tool_choice {choice!r}: use auto, none, any, required or a tool name")


def tools_system_prompt(tools: Sequence[ToolSpec]) -> str:
    lines = "\n".join(t.prompt_line() for t in tools)
    return (
        "You can call functions. The available functions are listed in <tools></tools>:\n"
        f"<tools>\n{lines}\n</tools>\n"
        "To call a function, reply with a JSON object with its name and arguments inside "
        f"{CALL_OPEN}{CALL_CLOSE} tags:\n"
        f'{CALL_OPEN}\n{{"name": "<function-name>", "arguments": {{<arguments>}}}}\n{CALL_CLOSE}'
    )


def render_call(name: str, args: Mapping[str, Any]) -> str:
    """How an assistant's call appears in the prompt (the format the grammar produces)."""
    return f"{CALL_OPEN}\n{json.dumps({'name': name, 'arguments': dict(args)})}\n{CALL_CLOSE}"


def render_result(name: str | None, content: str, status: str | None) -> str:
    body: dict[str, Any] = {"name": name, "content": content}
    if status == "error":
        body["status"] = "error"
    return f"<tool_response>\n{json.dumps(body, ensure_ascii=False)}\n</tool_response>"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def split_content(text: str) -> tuple[str, str]:
    """(text before the first <tool_call>, the rest)."""
    cut = text.find(CALL_OPEN)
    return (text, "") if cut == -1 else (text[:cut], text[cut:])


def safe_prefix(text: str) -> str:
    """The part of streamed text that cannot be the start of a <tool_call> tag."""
    content, rest = split_content(text)
    if rest:
        return content
    for k in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1):
        if CALL_OPEN.startswith(text[-k:]):
            return text[:-k]
    return text


def parse_calls(text: str) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    """Every <tool_call> block of `text`; a block that does not parse becomes invalid."""
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for match in _CALL_RE.finditer(text):
        parsed = parse_call_json(match.group(1).strip())
        if parsed.get("type") == "tool_call":
            calls.append(parsed)  # type: ignore[arg-type]
        else:
            invalid.append(parsed)  # type: ignore[arg-type]
    return calls, invalid


def parse_call_json(
    raw: str, name: str | None = None
) -> ToolCall | InvalidToolCall:
    """`{"name", "arguments"}`, or only the arguments object when `name` is known."""
    call_id = new_call_id()
    try:
        data = json.loads(raw)
        if name is not None:
            data = {"name": name, "arguments": data}
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ValueError("expected an object with a string 'name'")
        args = data.get("arguments", data.get("parameters", {}))
        if not isinstance(args, dict):
            raise ValueError("'arguments' must be an object")
        return ToolCall(name=data["name"], args=args, id=call_id, type="tool_call")
    except ValueError as exc:
        return InvalidToolCall(
            name=name, args=raw, id=call_id, error=str(exc), type="invalid_tool_call"
        )
