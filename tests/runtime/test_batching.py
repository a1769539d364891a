"""Continuous batching on a tiny random Llama: rows that join and leave mid-batch, each with
its own plan, give the tokens (and reports) the same request gives alone."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from steerguard.errors import PlanError
from steerguard.runtime.batching import ContinuousBatcher
from steerguard.runtime.engine import GenerationParams
from steerguard.runtime.hooks import hook_count
from steerguard.runtime.plan import SteeringPlan
from tests.runtime.helpers import seeded_probe, trace_layers

PROMPTS = [
    [{"role": "user", "content": "How do I reset my password?"}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Where is my order A-1234? It was due on Monday."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Thanks!"}],
]


@pytest.fixture
def batcher(engine):
    b = ContinuousBatcher(engine, max_batch=8)
    yield b
    b.close()


def plan(vector: str, strength: float, layers=(1, 2), op="add", positions="all") -> SteeringPlan:
    return SteeringPlan.single(vector, strength, list(layers), op=op, positions=positions)


PLANS = [
    None,
    plan("a", 1.0),
    plan("b", -1.0, positions="generated"),
    plan("a", 0.5, op="clamp"),
    plan("b", 0.8, positions="prompt"),
    plan("a", 1.0, positions="last_2"),
    plan("b", 0.0, op="ablate"),
    None,
]


def _rows():
    # Different prompt lengths and budgets, so rows leave at different steps.
    return [(PROMPTS[k % len(PROMPTS)], p, GenerationParams(max_new_tokens=4 + 3 * (k % 4)))
            for k, p in enumerate(PLANS)]


def test_concurrent_rows_equal_each_row_alone(engine, batcher) -> None:
    rows = _rows()
    alone = [engine.generate(prompt, p, params) for prompt, p, params in rows]
    barrier = threading.Barrier(len(rows))

    def run(k: int):
        prompt, p, params = rows[k]
        barrier.wait()
        time.sleep(0.003 * k)  # arrive over several steps: rows join a running batch
        return batcher.generate(prompt, p, params)

    with ThreadPoolExecutor(len(rows)) as pool:
        shared = list(pool.map(run, range(len(rows))))
    for got, want in zip(shared, alone, strict=True):
        assert got.token_ids == want.token_ids
        assert got.finish_reason == want.finish_reason
        assert [len(r.layers) for r in got.reports] == [len(r.layers) for r in want.reports]
        for a, b in zip(got.reports, want.reports, strict=True):
            for la, lb in zip(a.layers, b.layers, strict=True):
                assert la.positions_affected == lb.positions_affected
                assert la.delta_norm == pytest.approx(lb.delta_norm, rel=1e-4, abs=1e-5)
    assert batcher.steps > 0
    assert batcher.rows_stepped > batcher.steps  # some steps really decoded several rows
    deadline = time.time() + 10
    while hook_count(engine.model) and time.time() < deadline:
        time.sleep(0.01)
    assert hook_count(engine.model) == 0  # removed once the batch is empty


def test_logits_of_a_joining_row_match_alone(engine, batcher) -> None:
    params = GenerationParams(max_new_tokens=12, return_logits=True)
    long_run = threading.Thread(target=batcher.generate, args=(PROMPTS[2], plan("a", 1.0),
                                                               params))
    long_run.start()
    time.sleep(0.01)
    joined = batcher.generate(PROMPTS[1], plan("b", 0.7), GenerationParams(
        max_new_tokens=6, return_logits=True))
    long_run.join()
    alone = engine.generate(PROMPTS[1], plan("b", 0.7), GenerationParams(
        max_new_tokens=6, return_logits=True))
    assert joined.token_ids == alone.token_ids
    torch.testing.assert_close(joined.logits, alone.logits, atol=1e-4, rtol=1e-4)


def test_cancelled_row_leaves_at_the_next_step(engine, batcher) -> None:
    cancel = threading.Event()
    stream = batcher.stream(PROMPTS[0], plan("a", 1.0), GenerationParams(max_new_tokens=200),
                            cancel=cancel)
    other = threading.Thread(target=batcher.generate, args=(PROMPTS[1], None,
                                                            GenerationParams(max_new_tokens=30)))
    other.start()
    next(stream)
    cancel.set()
    rest = list(stream)
    other.join()
    result = rest[-1].result
    assert result is not None and result.finish_reason == "cancelled"
    assert result.completion_tokens < 200


def test_abandoned_stream_frees_its_row(engine, batcher) -> None:
    stream = batcher.stream(PROMPTS[0], None, GenerationParams(max_new_tokens=500))
    next(stream)
    stream.close()
    deadline = time.time() + 10
    while batcher.active and time.time() < deadline:
        time.sleep(0.01)
    assert batcher.active == 0


@pytest.mark.parametrize("prompt, offset", [("", 0), (PROMPTS[1], 10_000), (PROMPTS[1], -1)])
def test_a_bad_row_is_refused_before_it_waits_as_the_engine_refuses_it(
    engine, batcher, prompt, offset
) -> None:
    params = GenerationParams(max_new_tokens=1)
    with pytest.raises(PlanError) as by_engine:
        engine.generate_batch([prompt], [None], params, probe_offsets=[offset])
    with pytest.raises(PlanError) as by_batcher:
        batcher.generate(prompt, None, params, probe_offset=offset)
    assert str(by_batcher.value) == str(by_engine.value)
    assert batcher.waiting == 0


def test_a_bad_plan_fails_only_its_own_row(engine, batcher) -> None:
    params = GenerationParams(max_new_tokens=5)
    results: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def good():
        barrier.wait()
        results["good"] = batcher.generate(PROMPTS[0], plan("a", 1.0), params)

    def bad():
        barrier.wait()
        try:
            batcher.generate(PROMPTS[1], plan("missing", 1.0), params)
        except PlanError as exc:
            results["bad"] = exc

    threads = [threading.Thread(target=good), threading.Thread(target=bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(results["bad"], PlanError)
    assert results["good"].token_ids == engine.generate(PROMPTS[0], plan("a", 1.0),
                                                        params).token_ids


def test_probe_resolved_plans_and_second_prefill_match_alone(engine, batcher, loaded) -> None:
    probe = seeded_probe(loaded, 2, seed=3)

    def resolver(scores):  # steers prompt positions below the probe layer: second prefill
        return plan("a", 1.0 if scores["p"] > 0 else -1.0, layers=(0, 1))

    params = GenerationParams(max_new_tokens=6)
    alone = [engine.generate(p, resolver, params, probes=[probe]) for p in PROMPTS[:3]]
    barrier = threading.Barrier(3)

    def run(k: int):
        barrier.wait()
        return batcher.generate(PROMPTS[k], resolver, params, probes=[probe])

    with ThreadPoolExecutor(3) as pool:
        shared = list(pool.map(run, range(3)))
    for got, want in zip(shared, alone, strict=True):
        assert got.token_ids == want.token_ids
        assert got.probe_scores["p"] == pytest.approx(want.probe_scores["p"], abs=1e-4)


def test_sampled_rows_with_a_seed_equal_alone(engine, batcher) -> None:
    params = GenerationParams(max_new_tokens=8, temperature=0.9, top_p=0.9, seed=7)
    alone = engine.generate(PROMPTS[0], plan("a", 0.5), params)
    greedy = threading.Thread(target=batcher.generate, args=(PROMPTS[2], None,
                                                             GenerationParams(max_new_tokens=8)))
    greedy.start()
    got = batcher.generate(PROMPTS[0], plan("a", 0.5), params)
    greedy.join()
    assert got.token_ids == alone.token_ids


def test_rows_needing_a_second_prefill_rerun_apart_and_match_alone(engine, batcher,
                                                                   loaded) -> None:
    """Only rows whose resolved plan steers the prompt below the probe layer run it again;
    the others keep the first pass. Each row's tokens, scores and reports equal alone."""
    probe = seeded_probe(loaded, 2, seed=5)

    def resolver(k: int):
        def resolve(scores):
            if k % 2 == 0:  # below the probe layer, prompt positions: a second prefill
                return plan("a", 0.5 + scores["p"] * 0.1, layers=(0, 1))
            return plan("b", 0.7, layers=(0, 3), positions="generated")
        return resolve

    params = GenerationParams(max_new_tokens=6)
    prompts = [PROMPTS[k % len(PROMPTS)] for k in range(4)]
    alone = [engine.generate(p, resolver(k), params, probes=[probe])
             for k, p in enumerate(prompts)]
    barrier = threading.Barrier(4)

    def run(k: int):
        barrier.wait()
        return batcher.generate(prompts[k], resolver(k), params, probes=[probe])

    with ThreadPoolExecutor(4) as pool:
        shared = list(pool.map(run, range(4)))
    for got, want in zip(shared, alone, strict=True):
        assert got.token_ids == want.token_ids
        assert got.probe_scores["p"] == pytest.approx(want.probe_scores["p"], abs=1e-4)
        assert [len(r.layers) for r in got.reports] == [len(r.layers) for r in want.reports]
        for a, b in zip(got.reports, want.reports, strict=True):
            for la, lb in zip(a.layers, b.layers, strict=True):
                assert la.positions_affected == lb.positions_affected
                assert la.delta_norm == pytest.approx(lb.delta_norm, rel=1e-4, abs=1e-5)


def test_a_second_prefill_starts_at_the_lowest_layer_it_steers(engine, loaded,
                                                              monkeypatch) -> None:
    """Rows whose resolved plan steers the prompt from layer 2 run their second prefill from
    layer 2: layers 0 and 1 ran unsteered for them in the shared first pass. Tokens equal
    each row alone."""
    probe = seeded_probe(loaded, 3, seed=9)

    def resolver(k: int):
        if k % 2 == 0:
            return lambda scores: plan("a", 0.5 + scores["p"] * 0.1, layers=(2,))
        return lambda scores: plan("b", 0.7, layers=(0, 3), positions="generated")

    params = GenerationParams(max_new_tokens=1)
    alone = [engine.generate(PROMPTS[k], resolver(k), params, probes=[probe])
             for k in range(4)]
    ran = trace_layers(engine.model, monkeypatch)
    coming = [4]
    lock = threading.Lock()

    def submitted() -> None:
        with lock:
            coming[0] -= 1

    # all four in one first prefill: the batcher gathers while any is still on its way
    shared = ContinuousBatcher(engine, max_batch=8, gather_s=30, arriving=lambda: coming[0])
    try:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(
                lambda k: shared.generate(PROMPTS[k], resolver(k), params, probes=[probe],
                                          on_submit=submitted), range(4)))
    finally:
        shared.close()
    assert [ran.count(k) for k in range(4)] == [1, 1, 2, 2]  # one shared pass, then 2 and 3
    for a, b in zip(got, alone, strict=True):
        assert a.token_ids == b.token_ids
        assert a.probe_scores["p"] == pytest.approx(b.probe_scores["p"], abs=1e-4)
