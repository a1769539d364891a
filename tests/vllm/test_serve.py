"""`steerguard serve --backend vllm`: 16 concurrent requests with 16 explicit plans share
vLLM's batches through the server; each answer equals the same request sent alone (greedy),
each is audited with its plan, and no plan outlives its request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vllm.conftest import PROMPTS, needs_vllm

pytestmark = [needs_vllm, pytest.mark.real_model, pytest.mark.redis]

VECTORS = ("empathy", "formality", "concision", "sentiment")


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory, audit_prefix: str) -> Iterator:
    from tests.server.conftest import start_server, stop_server

    tmp: Path = tmp_path_factory.mktemp("serve-vllm")
    server = start_server(tmp, audit_prefix, {"max_batch": 16, "max_tokens": 64}, "vllm",
                          env={"STEERGUARD_BACKEND": "vllm"})
    yield server
    stop_server(server)


def plan(k: int) -> dict:
    """Sixteen distinct plans: four vectors, two signs, two layer spans."""
    vector = VECTORS[k % 4]
    strength = (0.04 + 0.01 * (k // 8)) * (1 if k % 8 < 4 else -1)
    layers = list(range(6, 14)) if k % 2 else list(range(10, 20))
    return {"interventions": [{"vector": vector, "layers": layers, "strength": strength}]}


def body(k: int, session: str) -> dict:
    return {
        "model": "smollm2-135m", "max_tokens": 12,
        "messages": [{"role": "user", "content": PROMPTS[k % len(PROMPTS)]}],
        "extra_body": {"steerguard": {"plan": plan(k), "session_id": session,
                                      "request_id": f"{session}-{k}"}},
    }


def test_sixteen_plans_share_batches_and_equal_their_requests_alone(vllm_server, store
                                                                    ) -> None:
    from openai import AsyncOpenAI, OpenAI

    from tests.server.conftest import KEYS, wait_for

    session = "vsrv-" + uuid.uuid4().hex[:8]
    sync = OpenAI(base_url=vllm_server.api, api_key=KEYS["author"], max_retries=0,
                  timeout=600)
    plain = {"model": "smollm2-135m", "max_tokens": 12,
             "messages": [{"role": "user", "content": PROMPTS[0]}]}
    before = sync.chat.completions.create(**plain).choices[0].message.content
    alone = [sync.chat.completions.create(**body(k, session + "-alone")) for k in range(16)]

    async def together() -> list:
        client = AsyncOpenAI(base_url=vllm_server.api, api_key=KEYS["author"], max_retries=0,
                             timeout=600)
        return await asyncio.gather(*(client.chat.completions.create(**body(k, session))
                                      for k in range(16)))

    shared = asyncio.run(together())
    for k, (a, s) in enumerate(zip(alone, shared, strict=True)):
        assert s.choices[0].message.content == a.choices[0].message.content, k
        meta = s.model_extra["steerguard"]
        assert meta["explicit"] and [p["vector"] for p in meta["plan"]] == [VECTORS[k % 4]]

    def decisions() -> list:
        return [r for r in store.query(session=session, limit=500).records
                if r.kind == "decision"]

    records = wait_for(lambda: len(decisions()) == 16 and decisions(), timeout=60)
    assert records and all(r.backend == "vllm" for r in records)
    # no plan outlives its request: an unsteered request after them is the plain answer again
    assert sync.chat.completions.create(**plain).choices[0].message.content == before
