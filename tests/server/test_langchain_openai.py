"""LangChain's own OpenAI chat model (`ChatOpenAI` with `base_url`) running the LangGraph
example agent (examples/support_agent.py) against the server, the profile in `extra_body`."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI

from tests.server.conftest import KEYS, MODEL, wait_for

pytestmark = [pytest.mark.real_model, pytest.mark.redis]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "support_agent.py"


def load_example():
    spec = importlib.util.spec_from_file_location("support_agent_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_agent_runs_on_chat_openai_with_profiles(server, store) -> None:
    example = load_example()
    runs = {}
    for profile, context, question in example.USERS:
        session = f"lc-{profile.user_id}-{uuid.uuid4().hex[:6]}"
        model = ChatOpenAI(
            base_url=server.api, api_key=KEYS["agent"], model=MODEL, max_tokens=20,
            max_retries=0, timeout=600,
            extra_body={"steerguard": {
                "profile": profile.model_dump(mode="json", exclude_defaults=True),
                "context": context.model_dump(mode="json", exclude_defaults=True),
                "session_id": session}},
        )
        agent = example.build_agent(model)
        state = agent.invoke({"messages": [SystemMessage(example.SYSTEM),
                                           HumanMessage(question)]})
        runs[profile.user_id] = (session, state["messages"][2:])

    for user, (session, messages) in runs.items():
        first, tool, last = messages[0], messages[1], messages[-1]
        assert isinstance(first, AIMessage) and first.tool_calls  # tool_choice any
        assert first.tool_calls[0]["name"] in {"lookup_order", "reset_password",
                                               "delete_account"}
        assert isinstance(tool, ToolMessage)
        assert isinstance(last, AIMessage) and last.content and not last.tool_calls
        decisions = wait_for(lambda s=session: [r for r in store.query(session=s).records
                                                if r.kind == "decision"], timeout=60)
        assert len(decisions) == 2, user  # the forced call, then the answer
        assert all(d.outcome.status == "completed" for d in decisions)
        if user == "sam":  # a minor: steered toward caution on both turns
            assert all("minor-safety" in [r.rule_id for r in d.rules] for d in decisions)
        else:
            assert all("minor-safety" not in [r.rule_id for r in d.rules] for d in decisions)
