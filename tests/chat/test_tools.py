"""The tool format, parsing, rendering and identity plumbing (no model)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel

from steerguard.chat.grammar import bound_schema
from steerguard.chat.messages import to_policy_messages, to_template_messages
from steerguard.chat.tools import (
    ToolChoice,
    ToolSpec,
    parse_call_json,
    parse_calls,
    render_call,
    safe_prefix,
)


class Lookup(BaseModel):
    """Look up an order."""

    order_id: str


SPECS = [ToolSpec.from_any(Lookup)]


@pytest.mark.parametrize(
    ("choice", "mode", "name"),
    [(None, "auto", None), ("auto", "auto", None), ("none", "none", None), ("any", "any", None),
     ("required", "any", None), (True, "any", None), ("Lookup", "named", "Lookup"),
     ({"type": "function", "function": {"name": "Lookup"}}, "named", "Lookup")],
)
def test_tool_choice(choice: Any, mode: str, name: str | None) -> None:
    assert ToolChoice.parse(choice, SPECS) == ToolChoice(mode, name)  # type: ignore[arg-type]


def test_tool_choice_unknown_name() -> None:
    with pytest.raises(ValueError, match="not a bound tool"):
        ToolChoice.parse("delete_everything", SPECS)


def test_parse_round_trip() -> None:
    text = "Let me check.\n" + render_call("Lookup", {"order_id": "A1"})
    calls, invalid = parse_calls(text)
    assert [(c["name"], c["args"]) for c in calls] == [("Lookup", {"order_id": "A1"})]
    assert calls[0]["id"] and not invalid
    calls, invalid = parse_calls('<tool_call>\n{"name": "Lookup", "arguments": {"order')
    assert not calls and invalid[0]["name"] is None
    assert parse_call_json('{"order_id": "x"}', "Lookup")["args"] == {"order_id": "x"}


def test_safe_prefix_holds_back_a_possible_tag() -> None:
    assert safe_prefix("Hello <tool") == "Hello "
    assert safe_prefix("Hello <b>") == "Hello <b>"
    assert safe_prefix("Hi <tool_call>{") == "Hi "


def test_rendering_tool_history() -> None:
    msgs = [
        SystemMessage("Be nice."),
        HumanMessage("Where is A1?"),
        AIMessage("", tool_calls=[{"name": "Lookup", "args": {"order_id": "A1"}, "id": "c1"}]),
        ToolMessage("shipped", tool_call_id="c1", status="error"),
        ToolMessage("second", tool_call_id="c1"),
    ]
    template = to_template_messages(msgs, SPECS)
    assert template[0]["role"] == "system" and "<tools>" in template[0]["content"]
    assert template[2]["content"].startswith("<tool_call>")
    assert template[3]["role"] == "user" and template[3]["content"].count("<tool_response>") == 2
    assert '"status": "error"' in template[3]["content"]
    policy = to_policy_messages(msgs)
    assert policy[2].tool_calls[0].name == "Lookup"
    assert policy[3].role == "tool" and policy[3].name == "Lookup" and policy[3].status == "error"


def test_images_are_refused() -> None:
    msg = HumanMessage(content=[{"type": "image", "url": "http://x"}])
    with pytest.raises(ValueError, match="text-only"):
        to_template_messages([msg])


def test_bound_schema_caps_free_strings_only() -> None:
    schema = {"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": "string", "enum": ["x"]},
        "c": {"type": "array", "items": {"type": "string"}}}}
    out = bound_schema(schema, 10, 3)
    assert out["properties"]["a"]["maxLength"] == 10
    assert "maxLength" not in out["properties"]["b"]
    assert out["properties"]["c"]["maxItems"] == 3
    assert out["properties"]["c"]["items"]["maxLength"] == 10
    num = bound_schema({"type": "integer", "minimum": 0}, 10, 3)
    assert num == {"type": "integer", "minimum": 0, "maximum": 999_999_999}
