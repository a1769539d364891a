"""Audit overflow `refuse`: when the audit log can keep no record (Redis unreachable and the
spill file refusing writes), the server answers 503 with the reason, before any steering."""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import MODEL, start_server, stop_server

pytestmark = [pytest.mark.real_model]


@pytest.fixture(scope="module")
def refusing_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve-refuse")
    s = start_server(tmp, "sgsrvrefuse", {"max_batch": 2}, "refuse", env={
        "STEERGUARD_REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens there
        "STEERGUARD_AUDIT_SPILL_PATH": "/dev/full",  # every write fails: ENOSPC
        "STEERGUARD_AUDIT_OVERFLOW": "refuse",
    })
    yield s
    stop_server(s)


def test_unavailable_audit_answers_503_before_steering(refusing_server) -> None:
    body = {"model": MODEL, "max_tokens": 1,
            "messages": [{"role": "user", "content": "Where is my order?"}]}
    statuses = []
    for _ in range(10):
        r = httpx.post(f"{refusing_server.api}/chat/completions", json=body,
                       headers=refusing_server.headers(), timeout=120)
        statuses.append(r.status_code)
        if r.status_code == 503:
            break
    assert statuses[-1] == 503, statuses
    assert set(statuses) <= {200, 503}
    problem = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert problem["title"] == "audit unavailable" and "audit" in problem["detail"]
    assert "Retry-After" in r.headers or "retry-after" in r.headers
    streamed = httpx.post(f"{refusing_server.api}/chat/completions",
                          json={**body, "stream": True}, headers=refusing_server.headers(),
                          timeout=120)
    assert streamed.status_code == 503  # refused before the stream's status line
