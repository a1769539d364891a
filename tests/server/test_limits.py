"""Back-pressure, body limits and generated requests, against a one-row server with no queue:
429 with Retry-After when no row is free, 413 over the body limit, and no 500 for anything
schemathesis generates from the OpenAPI spec."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.server.conftest import KEYS, MODEL, wait_for

pytestmark = [pytest.mark.real_model, pytest.mark.redis]


def _chat(server, body, **kw) -> httpx.Response:
    return httpx.post(f"{server.api}/chat/completions", json=body,
                      headers=server.headers(), timeout=120, **kw)


def test_full_queue_answers_429_with_retry_after(small_server) -> None:
    long = {"model": MODEL, "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "Tell me a long story."}]}
    with httpx.stream("POST", f"{small_server.api}/chat/completions", json=long,
                      headers=small_server.headers(), timeout=120) as held:
        assert held.status_code == 200
        next(held.iter_lines())  # the one row is taken
        refused = _chat(small_server, {"model": MODEL, "max_tokens": 1,
                                       "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["title"] == "queue full"
    # The row is free again once the held stream is gone (it leaves at the next step).
    hi = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    again = wait_for(lambda: (r := _chat(small_server, hi)).status_code != 429 and r,
                     timeout=60)
    assert again and again.status_code == 200


def test_body_over_the_limit_is_413(small_server) -> None:
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 5000}]}
    r = _chat(small_server, big)
    assert r.status_code == 413 and r.json()["field"] == "body"
    assert r.headers["content-type"].startswith("application/problem+json")

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"model": "' + MODEL.encode() + b'", "messages": [{"role": "user", '
        yield b'"content": "' + b"y" * 6000 + b'"}]}'

    r = httpx.post(f"{small_server.api}/chat/completions", content=chunks(),
                   headers={**small_server.headers(), "content-type": "application/json"},
                   timeout=60)
    assert r.status_code == 413


def test_no_generated_request_gets_a_500(small_server) -> None:
    """Every operation of the spec, fuzzed: errors are problem+json, never a 500."""
    schema = schemathesis.openapi.from_url(f"{small_server.url}/openapi.json")
    seen: dict[int, int] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert any(op.path == "/v1/chat/completions" for op in operations)
    for operation in operations:

        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case) -> None:
            case.headers = {**(case.headers or {}),
                            "Authorization": f"Bearer {KEYS['agent']}"}
            body = case.body
            if isinstance(body, dict) and "model" in body and sum(seen.values()) % 2 == 0:
                # Half the bodies name the served model, so generation paths are fuzzed too
                # (with short budgets: every token costs time on a CPU).
                body["model"] = MODEL
                for name in ("max_tokens", "max_completion_tokens"):
                    if isinstance(body.get(name), int) and body[name] > 2:
                        body[name] = 2
            response = case.call(timeout=120)
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code != 500, response.text[:500]
            assert response.status_code < 500 or response.status_code == 503
            assert "Traceback" not in response.text
            if response.status_code >= 400:
                assert response.headers["content-type"][0].startswith(
                    "application/problem+json")

        check()
    assert 400 in seen  # the generator did reach the validation paths
    print("statuses from generated requests:", seen)
