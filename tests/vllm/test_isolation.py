"""Concurrent requests with different plans share vLLM's batches without seeing each other's
plans, and nothing of a request stays in the workers after it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from steerguard.runtime.engine import GenerationParams
from steerguard.runtime.plan import SteeringPlan
from tests.vllm.conftest import PROMPTS, messages, needs_vllm

pytestmark = [needs_vllm, pytest.mark.real_model]

VECTORS = ("sentiment", "formality", "empathy", "caution")


def sixteen_plans() -> list[SteeringPlan | None]:
    plans: list[SteeringPlan | None] = [None]
    for k in range(15):
        vector = VECTORS[k % 4]
        strength = 0.04 + 0.02 * (k // 4) * (1 if k % 2 else -1)
        op = ("add", "clamp", "ablate")[k % 3]
        positions = ("all", "generated", "prompt", "last_3")[k % 4]
        plans.append(SteeringPlan.single(vector, strength, range(k % 5, 30 - k % 3), op,
                                         positions))
    return plans


def test_sixteen_concurrent_plans_each_equal_their_request_alone(vllm_backend):
    params = GenerationParams(max_new_tokens=16)
    plans = sixteen_plans()
    prompts = [messages(PROMPTS[i % len(PROMPTS)]) for i in range(len(plans))]
    alone = [vllm_backend.generate(p, plan, params) for p, plan in zip(prompts, plans,
                                                                        strict=True)]
    start = threading.Barrier(len(plans))

    def run(i):
        start.wait()
        return vllm_backend.generate(prompts[i], plans[i], params)

    with ThreadPoolExecutor(len(plans)) as pool:
        together = list(pool.map(run, range(len(plans))))
    for a, t in zip(alone, together, strict=True):
        assert t.token_ids == a.token_ids
        assert [r.vector_hash for r in t.reports] == [r.vector_hash for r in a.reports]
        for ra, rt in zip(a.reports, t.reports, strict=True):
            assert [m.positions_affected for m in rt.layers] == [
                m.positions_affected for m in ra.layers]
    assert len({t.token_ids for t in together}) > 8  # the plans did differ
    assert vllm_backend.worker_status() == [{"plans": 0, "requests": 0, "ledgers": 0}]


def test_a_cancelled_or_closed_request_leaves_nothing(vllm_backend):
    params = GenerationParams(max_new_tokens=200)
    plan = SteeringPlan.single("sentiment", 0.05, range(30))
    stream = vllm_backend.stream(messages(PROMPTS[1]), plan, params)
    for _ in range(3):
        next(stream)
    stream.close()
    cancel = threading.Event()
    cancel.set()
    (result,) = vllm_backend.generate_batch([messages(PROMPTS[2])], [plan], params,
                                            cancel=cancel)
    assert result.finish_reason == "cancelled"
    assert len(result.token_ids) < 5
    assert vllm_backend.worker_status() == [{"plans": 0, "requests": 0, "ledgers": 0}]


def test_stream_equals_generate(vllm_backend):
    params = GenerationParams(max_new_tokens=20)
    plan = SteeringPlan.single("formality", 0.08, range(4, 26))
    chunks = list(vllm_backend.stream(messages(PROMPTS[3]), plan, params))
    whole = vllm_backend.generate(messages(PROMPTS[3]), plan, params)
    assert "".join(c.text for c in chunks) == whole.text
    assert chunks[-1].result is not None
    assert chunks[-1].result.token_ids == whole.token_ids
    streamed = [c.token_id for c in chunks[:-1]]
    assert streamed[: len(whole.token_ids)] == list(whole.token_ids)  # an end token may follow


def test_the_first_steered_row_computes_the_norms_on_the_engine_loop(vllm_backend):
    """On a fresh backend the first steered row, already on the engine's loop, computes the
    layer norms there: it must not wait for the loop it runs on."""
    norms = vllm_backend.layer_norms
    vllm_backend._norms = None
    plan = SteeringPlan.single("empathy", 0.05, range(10, 20))
    future = vllm_backend._submit(vllm_backend.agenerate_batch(
        [messages(PROMPTS[5])], [plan], GenerationParams(max_new_tokens=4)))
    (result,) = future.result(timeout=600)
    assert len(result.reports) == 1
    assert torch.allclose(vllm_backend.layer_norms, norms)
