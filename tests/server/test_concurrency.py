"""16 concurrent clients with 16 profiles share the server's batches: each answer equals the
same request sent alone (greedy), every request is audited, the chain verifies, and a client
that goes away is audited cancelled."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.server.conftest import KEYS, MODEL, wait_for

pytestmark = [pytest.mark.real_model, pytest.mark.redis]

QUESTIONS = [
    "Hello, where is my order A-1234?",
    "How do I reset my password?",
    "I'm so stressed, my parcel never came.",
    "Can I change the delivery address?",
]


def profiles() -> list[dict]:
    bands = ["adult", "minor", "senior", "adult"]
    registers = ["formal", "neutral", "casual", "formal"]
    out = []
    for k, (band, register) in enumerate(itertools.product(bands, registers)):
        profile = {"user_id": f"user-{k}", "age_band": band,
                   "preferences": {"register": register}}
        if k % 3 == 0:
            profile["roles"] = ["vip"] if k % 2 else ["customer"]
        if k % 5 == 0:
            profile["formality_preference"] = round(k / 16, 2)
        out.append(profile)
    return out[:16]


def body(k: int, profile: dict, session: str) -> dict:
    return {
        "model": MODEL, "max_tokens": 14,
        "messages": [{"role": "user", "content": QUESTIONS[k % len(QUESTIONS)]}],
        "extra_body": {"steerguard": {"profile": profile, "session_id": session,
                                      "request_id": f"{session}-{k}"}},
    }


def test_sixteen_concurrent_clients_equal_their_requests_alone(server, store) -> None:
    session = "conc-" + uuid.uuid4().hex[:8]
    users = profiles()
    sync = OpenAI(base_url=server.api, api_key=KEYS["agent"], max_retries=0, timeout=600)
    alone = [sync.chat.completions.create(**body(k, p, session + "-alone"))
             for k, p in enumerate(users)]

    async def together():
        client = AsyncOpenAI(base_url=server.api, api_key=KEYS["agent"], max_retries=0,
                             timeout=600)
        try:
            return await asyncio.gather(*[
                client.chat.completions.create(**body(k, p, session))
                for k, p in enumerate(users)])
        finally:
            await client.close()

    shared = asyncio.run(together())
    for k, (got, want) in enumerate(zip(shared, alone, strict=True)):
        assert got.choices[0].message.content == want.choices[0].message.content, k
        assert got.usage == want.usage
        g, w = got.model_extra["steerguard"], want.model_extra["steerguard"]
        assert g["rules"] == w["rules"] and g["plan"] == w["plan"]
    assert len({tuple(s.model_extra["steerguard"]["rules"]) for s in shared}) > 1

    # Every request's records are in the store, and the chain verifies.
    def all_recorded():
        records = store.query(session=session, limit=500).records
        return records if len({r.request_id for r in records if r.kind == "decision"}) == 16 \
            else None

    records = wait_for(all_recorded, timeout=60)
    assert records, "not every request reached the audit log"
    for s in shared:
        sg = s.model_extra["steerguard"]
        mine = [r for r in records if r.decision_id == sg["decision_id"]]
        assert len(mine) == len(sg["audit_ids"])
    report = store.verify()
    assert report.ok, report.first

    # The batches really were shared: steps decoded several rows at once.
    metrics = httpx.get(f"{server.url}/metrics").text
    sums = [line for line in metrics.splitlines()
            if line.startswith("steerguard_server_batch_size_sum")]
    counts = [line for line in metrics.splitlines()
              if line.startswith("steerguard_server_batch_size_count")]
    assert float(sums[0].split()[-1]) > float(counts[0].split()[-1])


def test_a_client_that_disconnects_is_audited_cancelled(server, store) -> None:
    session = "gone-" + uuid.uuid4().hex[:8]
    request = {"model": MODEL, "max_tokens": 200, "stream": True,
               "messages": [{"role": "user", "content": "Tell me a very long story."}],
               "steerguard": {"profile": {"user_id": "leaver"}, "session_id": session}}
    with httpx.stream("POST", f"{server.api}/chat/completions", json=request,
                      headers=server.headers(), timeout=120) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        seen = [next(lines) for _ in range(6)]  # a few tokens, then hang up
        assert any('"content"' in line for line in seen)
    started = time.monotonic()
    records = wait_for(lambda: [r for r in store.query(session=session).records
                                if r.kind == "decision"], timeout=60)
    assert records and records[0].outcome.status == "cancelled"
    assert records[0].completion_tokens < 200
    assert time.monotonic() - started < 60
