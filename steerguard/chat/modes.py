"""Output modes: what the model is asked to produce and how its text is read back.

A chat request asks for one of four shapes of answer, and each is a small strategy holding
its prompt tools, forced prefix, grammar, token budget, parser and stream filter:

  TextAnswer     free text
  ToolsByChoice  free text, or calls to the offered tools (tool_choice auto)
  ForcedCall     exactly one call (tool_choice any / required / a tool name)
  JsonAnswer     one JSON value: any object (json_object) or one fitting a schema
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from langchain_core.messages import InvalidToolCall, ToolCall

from steerguard.chat.grammar import (
    GrammarFactory,
    bound_schema,
    call_schema,
    worst_case_tokens,
)
from steerguard.chat.tools import (
    CALL_OPEN,
    ToolChoice,
    ToolSpec,
    parse_call_json,
    parse_calls,
    safe_prefix,
    split_content,
)


@dataclass(frozen=True)
class Bounds:
    """Limits on free JSON in constrained output, so its worst case fits a token budget."""

    max_string_chars: int = 96
    max_array_items: int = 16
    min_tokens: int = 64  # budget floor for a required call or structured output

    def schema(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        return bound_schema(dict(schema), self.max_string_chars, self.max_array_items)


@dataclass(frozen=True)
class Outputs:
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class OutputMode:
    """Free text: the base the other modes refine."""

    name: ClassVar[str] = "text"
    prompt_tools: tuple[ToolSpec, ...] = ()  # tools described in the system prompt
    prefix: str = ""  # the answer's forced opening, appended to the prompt
    grammar: Any = None  # an xgrammar CompiledGrammar, or None when unconstrained
    budget: int = 0  # tokens the constrained answer needs at most; 0 when unconstrained

    @property
    def whole_answer_constrained(self) -> bool:
        """Stop strings and short budgets must not cut the answer: it is one JSON value."""
        return False

    def parse(self, text: str) -> Outputs:
        return Outputs(text)

    def visible(self, text: str) -> str:
        """The part of the text generated so far that may be streamed as content."""
        return text


TextAnswer = OutputMode


@dataclass(frozen=True)
class ToolsByChoice(OutputMode):
    name: ClassVar[str] = "tools"

    def parse(self, text: str) -> Outputs:
        content, rest = split_content(text)
        calls, invalid = parse_calls(rest)
        return Outputs(content, calls, invalid)

    def visible(self, text: str) -> str:
        return safe_prefix(text)


@dataclass(frozen=True)
class ForcedCall(OutputMode):
    name: ClassVar[str] = "forced_call"
    call_name: str | None = None  # decided before generation: in the prefix already

    @property
    def whole_answer_constrained(self) -> bool:
        return True

    def parse(self, text: str) -> Outputs:
        parsed = parse_call_json(text.strip(), self.call_name)
        if parsed.get("type") == "tool_call":
            return Outputs("", [parsed])  # type: ignore[list-item]
        return Outputs("", [], [parsed])  # type: ignore[list-item]

    def visible(self, text: str) -> str:
        return ""  # the call arrives whole, with the last chunk


@dataclass(frozen=True)
class JsonAnswer(OutputMode):
    name: ClassVar[str] = "json"

    @property
    def whole_answer_constrained(self) -> bool:
        return True


def choose_mode(
    grammars: GrammarFactory | None,
    *,
    tools: Sequence[ToolSpec] = (),
    tool_choice: Any = None,
    response_format: Mapping[str, Any] | None = None,
    bounds: Bounds = Bounds(),
) -> OutputMode:
    """The mode a request asks for. Tools win over a response format (as in OpenAI's API:
    a forced call is the structured output); tool_choice none offers no tools at all."""
    choice = ToolChoice.parse(tool_choice, tools) if tools else None

    def factory_() -> GrammarFactory:
        if grammars is None:
            raise ValueError("constrained output (tools, response_format) needs a grammar "
                             "compiler, and none was given")
        return grammars

    if choice is not None and choice.mode != "none":
        factory = factory_()
        specs = tuple(tools)
        if choice.mode == "auto":
            return ToolsByChoice(prompt_tools=specs, grammar=factory.optional_calls(specs))
        chosen = [t for t in specs if choice.mode == "any" or t.name == choice.name]
        if len(chosen) == 1:
            # The name is decided: put it in the prompt, constrain only the arguments.
            name = chosen[0].name
            schema = bounds.schema(chosen[0].parameters)
            return ForcedCall(
                prompt_tools=specs, prefix=f'{CALL_OPEN}\n{{"name": "{name}", "arguments": ',
                grammar=factory.json_schema(schema), budget=worst_case_tokens(schema),
                call_name=name,
            )
        schema = bounds.schema(call_schema(chosen))
        return ForcedCall(
            prompt_tools=specs, prefix=f"{CALL_OPEN}\n", grammar=factory.json_schema(schema),
            budget=worst_case_tokens(schema),
        )
    if response_format is None or response_format.get("type") in (None, "text"):
        return TextAnswer()
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = response_format.get("schema") or (
            response_format.get("json_schema") or {}
        ).get("schema")
        if not isinstance(schema, Mapping):
            raise ValueError("response_format json_schema needs a 'schema' object")
        bounded = bounds.schema(schema)
        return JsonAnswer(grammar=factory_().json_schema(bounded),
                          budget=worst_case_tokens(bounded))
    if kind == "json_object":  # any JSON object, as "json_object" means elsewhere
        return JsonAnswer(grammar=factory_().json_schema(bounds.schema({"type": "object"})),
                          budget=bounds.min_tokens)
    raise ValueError(f"response_format type {kind!r}: use text, json_object or json_schema")
