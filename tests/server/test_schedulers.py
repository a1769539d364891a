"""The app factory in process (the oversight API mounts its router this way): both schedulers
give the same greedy answer, and extra routers share the key dependency."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import APIRouter, Depends

from steerguard.config import SteerguardConfig
from steerguard.root import Steerguard
from steerguard.server.app import create_app
from steerguard.server.batching import BatchingScheduler
from steerguard.server.keys import KeyRing, Principal, require_scope
from steerguard.server.scheduler import ThreadScheduler

pytestmark = [pytest.mark.real_model]

BODY = {"model": "smollm2-135m", "max_tokens": 8,
        "messages": [{"role": "user", "content": "How do I reset my password?"}],
        "steerguard": {"profile": {"user_id": "u-1", "age_band": "minor"}}}


def test_both_schedulers_answer_alike_and_routers_share_keys(real_engine) -> None:
    ring = KeyRing.load(env={"STEERGUARD_API_KEYS": "agent:sk-a:chat,auditor:sk-r:audit:read"})
    router = APIRouter()

    @router.get("/v1/audit/whoami")
    def whoami(who: Principal = Depends(require_scope("audit:read"))) -> dict[str, str]:
        return {"name": who.name}

    async def run(scheduler) -> tuple[dict, list[int]]:
        root = Steerguard(SteerguardConfig.load(), engine=real_engine, audit=False)
        app = create_app(root, keys=ring, scheduler=scheduler, routers=[router], load=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test",
                                     timeout=300) as client:
            answer = await client.post("/v1/chat/completions", json=BODY,
                                       headers={"Authorization": "Bearer sk-a"})
            statuses = [
                (await client.get("/v1/audit/whoami", headers={"Authorization": f"Bearer {k}"}
                                  )).status_code for k in ("sk-r", "sk-a")]
        await scheduler.close()
        root.close()
        assert answer.status_code == 200, answer.text
        return answer.json(), statuses

    threaded, statuses = asyncio.run(run(ThreadScheduler(concurrency=2)))
    batched, _ = asyncio.run(run(BatchingScheduler(max_batch=4)))
    assert statuses == [200, 403]
    assert threaded["choices"][0]["message"]["content"] == batched["choices"][0]["message"][
        "content"]
    assert threaded["steerguard"]["rules"] == batched["steerguard"]["rules"] == ["minor-safety"]
    assert threaded["steerguard"]["audit_ids"] == []  # this root audits nothing
