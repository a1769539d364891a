"""SteeredChatModel on the real bundled model, shipped policy bundle and a real audit log."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from steerguard.policy.inputs import RequestContext, UserProfile

pytestmark = pytest.mark.real_model


def _config(profile: UserProfile, session: str, **context: Any) -> dict[str, Any]:
    return {"configurable": {"steerguard_profile": profile, "session_id": session,
                             "request_context": RequestContext(**context)}}


def _stored(store: Any, audit: Any, **query: Any) -> list[Any]:
    """The records of calls that have returned: a call records its request before it
    returns, and flush() returns once everything recorded is in Redis."""
    assert audit.flush(30), audit.counters
    return store.query(**query).records  # type: ignore[no-any-return]


PROFILES = {
    "minor": (UserProfile(user_id="kid-1", age_band="minor"), "minor-safety"),
    "formal": (UserProfile(user_id="formal-1", age_band="adult",
                           preferences={"register": "formal"}), "formal-preference"),
    "casual": (UserProfile(user_id="casual-1", age_band="adult",
                           preferences={"register": "casual"},
                           consent={"personalization": True}), "casual-preference"),
    "sms": (UserProfile(user_id="sms-1", age_band="senior"), "terse-channel"),
}


async def test_concurrent_requests_get_their_own_decisions_and_records(
    chat: Any, lc_audit: Any, lc_store: Any
) -> None:
    run = f"conc-{time.time_ns()}"
    prompt = "Where is my order?"

    async def one(key: str) -> Any:
        profile, _ = PROFILES[key]
        channel = "sms" if key == "sms" else "chat"
        return await chat.ainvoke(prompt, _config(profile, f"{run}-{key}", channel=channel),
                                  max_tokens=4)

    keys = list(PROFILES)
    replies = await asyncio.gather(*(one(k) for k in keys))
    metas = [r.response_metadata["steerguard"] for r in replies]
    assert len({m["decision_id"] for m in metas}) == len(keys)
    for key, reply, meta in zip(keys, replies, metas, strict=True):
        profile, rule = PROFILES[key]
        assert rule in meta["rules"], (key, meta["rules"])
        records = _stored(lc_store, lc_audit, session=f"{run}-{key}")
        # one to one: exactly this request's records, in the order the model reported them
        assert [r.record_id for r in records] == meta["audit_ids"]
        decision = [r for r in records if r.kind == "decision"]
        assert len(decision) == 1 and decision[0].decision_id == meta["decision_id"]
        assert decision[0].request_id == meta["request_id"]
        assert decision[0].user_ref == lc_store.user_ref(profile.user_id)
        assert decision[0].outcome.status == "completed"
        assert decision[0].completion_tokens == reply.usage_metadata["output_tokens"]
        steered = Counter((r.vector, r.strength) for r in records if r.kind == "intervention")
        assert steered == Counter((v["vector"], v["strength"]) for v in meta["vectors"])


def test_greedy_stream_equals_invoke(chat: Any) -> None:
    prompt = "Name one colour of the sky."
    whole = chat.invoke(prompt, max_tokens=10)
    chunks = list(chat.stream(prompt, max_tokens=10))
    assert "".join(str(c.content) for c in chunks) == whole.content
    assert len(chunks) > 2  # token by token, not one blob
    assert chunks[-1].chunk_position == "last"
    with_usage = [c for c in chunks if c.usage_metadata]
    assert len(with_usage) == 1  # input tokens counted once
    assert with_usage[0].usage_metadata == whole.usage_metadata
    assert chunks[-1].response_metadata["finish_reason"] == whole.response_metadata[
        "finish_reason"]


class GetOrderStatus(BaseModel):
    """Look up the shipping status of an order."""

    order_id: str = Field(description="The order number, like A-1234")


class IssueRefund(BaseModel):
    """Refund an order."""

    order_id: str
    amount: float = Field(ge=0)
    reason: Literal["damaged", "late", "other"]


class DeleteAccount(BaseModel):
    """Permanently delete the user's account. Cannot be undone."""

    user_id: str
    confirm: bool


TOOLS: dict[str, type[BaseModel]] = {
    t.__name__: t for t in (GetOrderStatus, IssueRefund, DeleteAccount)
}


@pytest.mark.parametrize(
    ("prompt", "choice"),
    [("My parcel A-77 never arrived, it was late. Refund me 20 dollars.", "any"),
     ("Please delete my account, my id is u-9.", "required"),
     ("hello?", "IssueRefund")],
)
def test_required_tool_calls_always_parse_and_validate(
    chat: Any, prompt: str, choice: str
) -> None:
    model = chat.model_copy(update={"max_string_chars": 24})
    reply = model.bind_tools(list(TOOLS.values()), tool_choice=choice).invoke(prompt)
    assert not reply.invalid_tool_calls
    assert len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert call["id"] and call["name"] in TOOLS
    if choice in TOOLS:
        assert call["name"] == choice
    TOOLS[call["name"]].model_validate(call["args"])
    assert reply.response_metadata["finish_reason"] == "tool_calls"
    assert reply.response_metadata["steerguard"]["grammar"]["backend"] == "xgrammar"


def test_destructive_tool_request_steers_with_caution(chat: Any) -> None:
    """Tool state reaches the policy: the agent just asked to delete an account."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    msgs = [HumanMessage("Delete my account u-9."),
            AIMessage("", tool_calls=[{"name": "delete_account", "args": {"user_id": "u-9"},
                                       "id": "c1"}]),
            ToolMessage("error: account locked", tool_call_id="c1", status="error")]
    reply = chat.invoke(msgs, max_tokens=2)
    rules = reply.response_metadata["steerguard"]["rules"]
    assert "tool-failure-care" in rules


async def test_cancelled_async_stream_is_audited_cancelled(
    chat: Any, lc_audit: Any, lc_store: Any
) -> None:
    session = f"cancel-{time.time_ns()}"
    cfg = _config(UserProfile(user_id="c-1"), session)
    stream = chat.astream("Tell me a long story about a dragon.", cfg, max_tokens=60)
    got = 0
    async for _ in stream:
        got += 1
        if got == 2:
            break
    await stream.aclose()
    # The model's own generator is closed by the event loop's finalizer, later: poll.
    records: list[Any] = []
    deadline = time.monotonic() + 30
    while not records and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # lets the loop run the finalizer
        records = _stored(lc_store, lc_audit, session=session, kind="decision")
    assert len(records) == 1
    assert records[0].outcome.status == "cancelled"
    assert (records[0].completion_tokens or 0) < 60


def test_activation_probes_read_the_latest_human_turn(chat: Any) -> None:
    """A forced call's prefix and the tool round after the human turn do not move the probes:
    they read where the conditions were calibrated, at the end of the human message."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    tools = list(TOOLS.values())
    question = HumanMessage("I'm so stressed, please refund order 12 now.")
    auto = chat.bind_tools(tools, tool_choice="auto").invoke([question], max_tokens=1)
    forced = chat.bind_tools(tools, tool_choice="any").invoke([question], max_tokens=1)
    after_tool = chat.bind_tools(tools, tool_choice="auto").invoke(
        [question,
         AIMessage("", tool_calls=[{"name": "IssueRefund", "args": {"order_id": "12"},
                                    "id": "c1"}]),
         ToolMessage("refund issued", tool_call_id="c1")],
        max_tokens=1,
    )
    scores = [m.response_metadata["steerguard"]["activation_scores"]
              for m in (auto, forced, after_tool)]
    assert set(scores[0]) == {"harmful_request", "distress"}
    for other in scores[1:]:
        for name, value in scores[0].items():
            assert abs(other[name] - value) < 1e-3, (name, scores)
    assert scores[0]["distress"] > 0.5  # and the reading is the calibrated one: distressed
