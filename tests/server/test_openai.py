"""The official openai client, sync and async, against `steerguard serve` in a subprocess."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.server.conftest import KEYS, MODEL, wait_for

pytestmark = [pytest.mark.real_model, pytest.mark.redis]

ADULT = {"user_id": "alex", "age_band": "adult", "preferences": {"register": "formal"}}
MINOR = {"user_id": "sam", "age_band": "minor"}
ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Look up the shipping status of an order by its id, like A-1234.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                       "required": ["order_id"]},
    },
}


def client(server, who: str = "agent") -> OpenAI:
    return OpenAI(base_url=server.api, api_key=KEYS[who], max_retries=0, timeout=300)


def ask(text: str, profile=None, **extra):
    body = {"steerguard": {"profile": profile, **extra}} if profile is not None else {}
    return {"model": MODEL, "messages": [{"role": "user", "content": text}],
            "extra_body": body}


def test_health_and_models(server) -> None:
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["status"] == "ok" and health["model"] == MODEL
    assert [m.id for m in client(server).models.list().data] == [MODEL]


def test_completion_carries_usage_decision_and_audit_ids(server, store) -> None:
    out = client(server).chat.completions.create(
        **ask("Hello, where is my order A-1234?", MINOR, session_id="s-minor",
              request_id="req-minor-1"), max_tokens=12)
    choice = out.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert out.usage.completion_tokens == 12 or choice.finish_reason == "stop"
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    sg = out.model_extra["steerguard"]
    assert sg["request_id"] == "req-minor-1"
    assert "minor-safety" in sg["rules"]
    assert any(v["vector"] == "caution" for v in sg["plan"])
    assert sg["explicit"] is False and sg["bundle"].startswith("support@")
    assert "minor-safety" in sg["explanation"]
    records = wait_for(lambda: store.query(decision=sg["decision_id"]).records)
    assert {r.kind for r in records} == {"decision", "intervention"}
    decision = next(r for r in records if r.kind == "decision")
    assert decision.session_id == "s-minor" and decision.request_id == "req-minor-1"
    assert decision.outcome.status == "completed"
    assert len(records) == len(sg["audit_ids"])


def test_stream_equals_the_whole_answer(server) -> None:
    c = client(server)
    request = ask("How do I reset my password?", ADULT)
    whole = c.chat.completions.create(**request, max_tokens=10)
    chunks = list(c.chat.completions.create(**request, max_tokens=10, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    finish = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].model_extra["steerguard"]["rules"] == whole.model_extra["steerguard"][
        "rules"]


def test_async_client_streams_and_completes(server) -> None:
    async def main():
        c = AsyncOpenAI(base_url=server.api, api_key=KEYS["agent"], max_retries=0,
                        timeout=300)
        request = ask("Thanks for your help!", ADULT)
        whole = await c.chat.completions.create(**request, max_tokens=8)
        stream = await c.chat.completions.create(**request, max_tokens=8, stream=True)
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream
                        if ch.choices])
        await c.close()
        return whole, text

    whole, text = asyncio.run(main())
    assert text == whole.choices[0].message.content and text


def test_required_tool_call_then_answer_from_its_result(server) -> None:
    c = client(server)
    messages = [{"role": "system", "content": "You are a support agent. Use the tools."},
                {"role": "user", "content": "Where is my order A-1234?"}]
    out = c.chat.completions.create(model=MODEL, messages=messages, tools=[ORDER_TOOL],
                                    tool_choice="required", max_tokens=40,
                                    extra_body={"steerguard": {"profile": ADULT}})
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "lookup_order"
    assert isinstance(json.loads(call.function.arguments)["order_id"], str)
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "shipped on Monday"},
    ]
    answer = c.chat.completions.create(model=MODEL, messages=messages, tools=[ORDER_TOOL],
                                       tool_choice="none", max_tokens=12)
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    streamed = list(c.chat.completions.create(
        model=MODEL, messages=messages[:2], tools=[ORDER_TOOL], tool_choice="required",
        max_tokens=40, stream=True, extra_body={"steerguard": {"profile": ADULT}}))
    calls = [tc for ch in streamed if ch.choices for tc in ch.choices[0].delta.tool_calls or ()]
    assert calls[0].function.name == "lookup_order"
    assert calls[0].function.arguments == call.function.arguments


def test_json_schema_answer_fits_the_schema(server) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"},
                                               "days": {"type": "integer"}},
              "required": ["city", "days"], "additionalProperties": False}
    out = client(server).chat.completions.create(
        **ask("Plan a trip to Paris for three days."), max_tokens=40,
        response_format={"type": "json_schema",
                         "json_schema": {"name": "trip", "schema": schema}})
    data = json.loads(out.choices[0].message.content)
    assert set(data) == {"city", "days"} and isinstance(data["days"], int)
    loose = client(server).chat.completions.create(
        **ask("Reply with a JSON object with your name."), max_tokens=30,
        response_format={"type": "json_object"})
    text = loose.choices[0].message.content
    # Any object is unbounded: the grammar keeps it JSON, the token budget may cut it.
    assert text.startswith("{")
    if loose.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_explicit_plan_needs_the_steer_scope_and_is_audited(server, store) -> None:
    plan = {"interventions": [{"vector": "caution", "layers": [19, 20], "strength": 0.05}]}
    request = ask("Tell me about your shop.", ADULT, plan=plan)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client(server, "agent").chat.completions.create(**request, max_tokens=4)
    assert denied.value.response.headers["content-type"].startswith("application/problem+json")
    assert denied.value.response.json()["field"] == "steerguard.plan"
    out = client(server, "author").chat.completions.create(**request, max_tokens=6)
    sg = out.model_extra["steerguard"]
    assert sg["explicit"] is True and sg["rules"] == ["explicit-plan"]
    assert sg["plan"][0]["vector"] == "caution" and sg["plan"][0]["rule"] == "explicit-plan"
    records = wait_for(lambda: store.query(decision=sg["decision_id"]).records)
    decision = next(r for r in records if r.kind == "decision")
    assert [r.rule_id for r in decision.rules] == ["explicit-plan"]
    interventions = [r for r in records if r.kind == "intervention"]
    assert interventions and all(r.rule_id == "explicit-plan" for r in interventions)


def _problem(server, body, who="agent", status=400):
    r = httpx.post(f"{server.api}/chat/completions", json=body, headers=server.headers(who),
                   timeout=60)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == status and problem["detail"]
    assert "Traceback" not in r.text
    return problem


def test_bad_bodies_name_the_field(server) -> None:
    base = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    unknown = {"interventions": [{"vector": "nope", "layers": [3], "strength": 0.1}]}
    p = _problem(server, {**base, "steerguard": {"plan": unknown}}, who="author")
    assert p["field"] == "steerguard.plan.interventions[0].vector"
    assert "caution" in p["expected"]
    p = _problem(server, {**base, "steerguard": {"profile": {"user_id": "u", "shoe": 42}}})
    assert p["field"] == "steerguard.profile" and "shoe" in p["detail"]
    p = _problem(server, {**base, "messages": [{"role": "user"}]})
    assert p["field"] == "messages[0].user.content"
    p = _problem(server, {**base, "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]})
    assert p["field"] == "messages[0].tool_calls[0].function.arguments"
    p = _problem(server, {**base, "model": "gpt-4o"})
    assert p["field"] == "model" and MODEL in p["expected"]
    p = _problem(server, {**base, "max_tokens": 10**6})
    assert p["field"] == "max_tokens"
    p = _problem(server, {**base, "tool_choice": "required"})
    assert p["field"] == "tool_choice"
    p = _problem(server, {**base, "n": 3})
    assert p["field"] == "n"


def test_keys_are_required_and_checked(server) -> None:
    url = f"{server.api}/chat/completions"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    missing = httpx.post(url, json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer sk-wrong"})
    assert wrong.status_code == 401 and wrong.json()["field"] == "Authorization"
    assert KEYS["agent"] not in wrong.text
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=server.api, api_key="sk-wrong", max_retries=0).models.list()


def test_metrics_export_queue_batch_and_ttft(server) -> None:
    client(server).chat.completions.create(**ask("hello"), max_tokens=3)
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("steerguard_server_queue_depth", "steerguard_server_batch_size",
                 "steerguard_server_time_to_first_token_seconds", "gen_ai_client_token_usage"):
        assert name in text, name
