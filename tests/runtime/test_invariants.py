"""Reversibility, batching and concurrency invariants, on a tiny random Llama."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from steerguard.directions.probe import ActivationProbe, ProbeLayer
from steerguard.errors import PlanError
from steerguard.runtime.engine import GenerationParams
from steerguard.runtime.hooks import hook_count
from steerguard.runtime.plan import Intervention, Operation, Positions, SteeringPlan
from tests.runtime.helpers import trace_layers, weights_snapshot

PARAMS = GenerationParams(max_new_tokens=8, return_logits=True)
PROMPT = [{"role": "user", "content": "How do I reset my password?"}]


def plan(vector: str, strength: float, layers=(1, 2), op="add", positions="all") -> SteeringPlan:
    return SteeringPlan.single(vector, strength, list(layers), op=op, positions=positions)


def test_empty_and_zero_plans_are_identical_to_unsteered(engine) -> None:
    base = engine.generate(PROMPT, None, PARAMS)
    for p in (SteeringPlan.empty(), plan("a", 0.0), plan("a", 0.0, positions="generated")):
        out = engine.generate(PROMPT, p, PARAMS)
        assert out.token_ids == base.token_ids
        assert torch.equal(out.logits, base.logits)


def test_no_hooks_and_same_weights_after_success_and_failure(engine, loaded) -> None:
    before = weights_snapshot(loaded)
    base = engine.generate(PROMPT, None, PARAMS)
    engine.generate(PROMPT, plan("a", 1.5), PARAMS)
    assert hook_count(loaded.model) == 0

    def explode(_ids, _scores):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.generate(PROMPT, plan("a", 1.5), PARAMS, logits_processor=explode)
    assert hook_count(loaded.model) == 0
    with pytest.raises(PlanError, match="not loaded"):
        engine.generate(PROMPT, plan("missing", 1.0), PARAMS)
    with pytest.raises(PlanError, match="no direction for layer 9"):
        engine.generate(PROMPT, plan("a", 1.0, layers=(9,)), PARAMS)
    assert hook_count(loaded.model) == 0
    after = weights_snapshot(loaded)
    assert all(torch.equal(before[k], after[k]) for k in before)
    again = engine.generate(PROMPT, None, PARAMS)
    assert torch.equal(again.logits, base.logits)


def test_abandoned_stream_removes_hooks(engine, loaded) -> None:
    stream = engine.stream(PROMPT, plan("a", 1.0), PARAMS)
    next(stream)
    assert hook_count(loaded.model) > 0  # installed while the generation is alive
    stream.close()
    assert hook_count(loaded.model) == 0


def test_batch_rows_match_single_runs_for_equal_lengths(engine) -> None:
    plans = [
        None,
        plan("a", 1.0),
        plan("b", -1.0, op="add", positions="generated"),
        plan("a", 0.5, op="clamp"),
        plan("b", 0.0, op="ablate"),
        None,
    ]
    batch = engine.generate_batch([PROMPT] * len(plans), plans, PARAMS)
    for p, row in zip(plans, batch, strict=True):
        alone = engine.generate(PROMPT, p, PARAMS)
        assert row.token_ids == alone.token_ids
        torch.testing.assert_close(row.logits, alone.logits, atol=1e-4, rtol=1e-4)


def test_left_padding_costs_steered_rows_no_more_than_unsteered_rows(engine) -> None:
    short = [{"role": "user", "content": "Hi"}]
    prompts = [PROMPT, short, short]
    plans = [None, None, plan("a", 1.0)]
    batch = engine.generate_batch(prompts, plans, PARAMS)
    plain_alone = engine.generate(short, None, PARAMS)
    steered_alone = engine.generate(short, plans[2], PARAMS)
    n = min(len(batch[1].logits), len(plain_alone.logits))
    m = min(len(batch[2].logits), len(steered_alone.logits))
    pad_error = (batch[1].logits[:n] - plain_alone.logits[:n]).abs().max()
    steer_error = (batch[2].logits[:m] - steered_alone.logits[:m]).abs().max()
    assert steer_error <= pad_error + 1e-4


def test_threads_with_different_plans_match_sequential_runs(engine) -> None:
    plans = [
        plan("a", 1.0),
        plan("b", -1.0),
        None,
        plan("a", 0.7, op="clamp"),
        plan("b", 1.0, positions="prompt"),
        plan("a", 1.0, positions="last_2"),
    ]
    sequential = [engine.generate(PROMPT, p, PARAMS) for p in plans]
    barrier = threading.Barrier(len(plans))

    def run(p):
        barrier.wait()
        return engine.generate(PROMPT, p, PARAMS)

    with ThreadPoolExecutor(len(plans)) as pool:
        concurrent = list(pool.map(run, plans))
    for seq, con in zip(sequential, concurrent, strict=True):
        assert seq.token_ids == con.token_ids
        torch.testing.assert_close(seq.logits, con.logits, atol=1e-5, rtol=1e-5)
        assert [r.layers for r in seq.reports] == [r.layers for r in con.reports]


def test_reports_measure_each_operation(engine) -> None:
    norms = engine.layer_norms
    add = engine.generate(PROMPT, plan("a", 0.5), PARAMS).reports[0]
    for m in add.layers:
        assert m.delta_norm == pytest.approx(0.5 * float(norms[m.layer]), rel=1e-5)
        assert m.projection_after - m.projection_before == pytest.approx(m.delta_norm, rel=1e-3)
    ablate = engine.generate(PROMPT, plan("a", 0.0, op="ablate"), PARAMS).reports[0]
    for m in ablate.layers:
        assert abs(m.projection_after) < 1e-3
        assert m.delta_norm > 0
    clamp = engine.generate(PROMPT, plan("a", 0.25, op="clamp"), PARAMS).reports[0]
    for m in clamp.layers:
        assert m.projection_after == pytest.approx(0.25 * float(norms[m.layer]), rel=1e-3)


def test_position_scopes_count_the_right_tokens(engine) -> None:
    prompt_len = len(engine.encode(PROMPT))
    result = engine.generate(PROMPT, None, PARAMS)
    generated = result.completion_tokens + (result.finish_reason == "stop")
    expected = {
        "all": prompt_len + generated - 1,  # the last chosen token is never fed back
        "prompt": prompt_len,
        "generated": generated - 1,
        "last_3": 3,
    }
    for scope, count in expected.items():
        report = engine.generate(PROMPT, plan("a", 0.0, positions=scope), PARAMS).reports[0]
        assert {m.positions_affected for m in report.layers} == {count}, scope


def test_plan_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="repeat"):
        Intervention(vector="a", layers=(1, 1))
    with pytest.raises(ValueError, match="last_n"):
        Positions(scope="last_n")
    with pytest.raises(ValueError, match="finite"):
        Intervention(vector="a", layers=(1,), strength=float("nan"))
    assert Operation("clamp") is Operation.CLAMP


def _probe(*parts: tuple[int, torch.Tensor, float, float]) -> ActivationProbe:
    """Probe "p" reading (layer, direction, center, spread) per part; scores are raw readings."""
    return ActivationProbe(
        name="p", threshold=0.0, scale=1.0,
        parts=tuple(ProbeLayer(layer=layer, direction=tuple(d.tolist()), center=c, spread=s)
                    for layer, d, c, s in parts))


def test_resolver_reads_probe_and_steers_in_same_prefill(engine, monkeypatch) -> None:
    direction = torch.nn.functional.normalize(torch.randn(engine.fingerprint.hidden_size), dim=0)
    probe = _probe((1, direction, 0.0, 1.0))
    seen: list[float] = []
    forwards = 0
    assert engine.layer_norms.numel()  # calibrated now, not inside the counted calls
    original = engine.model.forward

    def counted(*args, **kwargs):
        nonlocal forwards
        forwards += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(engine.model, "forward", counted)

    def run(plan_or_resolver, **kwargs):
        nonlocal forwards
        forwards = 0
        result = engine.generate(PROMPT, plan_or_resolver, PARAMS, **kwargs)
        return result, forwards

    def resolver(scores):
        seen.append(scores["p"])
        return plan("a", 1.0, layers=(1, 2, 3))  # the probe layer and later ones

    fixed, fixed_passes = run(plan("a", 1.0, layers=(1, 2, 3)))
    resolved, passes = run(resolver, probes=[probe])
    assert len(seen) == 1 and resolved.probe_scores == {"p": seen[0]}
    assert resolved.token_ids == fixed.token_ids and passes == fixed_passes  # one prefill
    torch.testing.assert_close(resolved.logits, fixed.logits)
    # A plan steering prompt positions below the probe layer forces an exact second prefill;
    # the first pass stops at the probe layer (its later layers would be thrown away).
    ran = trace_layers(engine.model, monkeypatch)
    early, early_passes = run(lambda s: plan("a", 1.0, layers=(0, 1)), probes=[probe])
    first_pass = ran[: ran.index(0, 1)]  # up to the second pass's layer 0
    fixed_early, fixed_early_passes = run(plan("a", 1.0, layers=(0, 1)))
    torch.testing.assert_close(early.logits, fixed_early.logits)
    assert early_passes == fixed_early_passes + 1 and first_pass == [0, 1]


def test_a_second_prefill_runs_only_from_the_lowest_layer_it_steers(engine, monkeypatch) -> None:
    """The layers below the lowest one a resolved plan steers ran unsteered in the first pass:
    the second prefill takes their outputs and cache from it, and gives the logits of the plan
    applied from the start."""
    direction = torch.nn.functional.normalize(torch.randn(engine.fingerprint.hidden_size), dim=0)
    probe = _probe((3, direction, 0.0, 1.0))
    steer = plan("a", 1.0, layers=(2,))
    fixed = engine.generate(PROMPT, steer, PARAMS)
    ran = trace_layers(engine.model, monkeypatch)
    resolved = engine.generate(PROMPT, lambda s: steer, PARAMS, probes=[probe])
    assert resolved.token_ids == fixed.token_ids
    torch.testing.assert_close(resolved.logits, fixed.logits)
    decode = PARAMS.max_new_tokens - 1
    # layers 0-3 in the first pass (it stops at the probe layer), then 2 and 3 again
    assert [ran.count(k) for k in range(4)] == [1 + decode, 1 + decode, 2 + decode, 2 + decode]
    assert [r.layers[0].positions_affected for r in resolved.reports] == [
        r.layers[0].positions_affected for r in fixed.reports]


def test_activations_keep_order_stop_early_and_match_single_runs(engine, monkeypatch) -> None:
    prompts = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "Tell me a long story about the sea and the ships on it."}],
        [{"role": "user", "content": "Why?"}],
    ]
    layers = [0, 2]
    ran = trace_layers(engine.model, monkeypatch)
    batched = engine.activations(prompts, layers)
    assert max(ran) == 2  # layers after the last wanted one never ran
    assert hook_count(engine.model) == 0
    for row, prompt in enumerate(prompts):
        single = engine.activations([prompt], layers)
        for layer in layers:
            torch.testing.assert_close(batched[layer][row], single[layer][0], atol=1e-4, rtol=1e-4)
    assert engine.activations([], layers)[0].shape == (0, engine.fingerprint.hidden_size)


def test_probe_offset_reads_the_conversation_end_before_an_appended_prefix(engine) -> None:
    direction = torch.nn.functional.normalize(torch.randn(engine.fingerprint.hidden_size), dim=0)
    probe = _probe((1, direction, 0.0, 1.0))
    conversation = engine.encode(PROMPT)
    prefix = engine.encode([{"role": "user", "content": "<tool_call>"}])[-3:]
    short = GenerationParams(max_new_tokens=1)
    alone = engine.generate(conversation, lambda s: SteeringPlan(), short, probes=[probe])
    extended = conversation + prefix
    skipped = engine.generate(
        extended, lambda s: SteeringPlan(), short, probes=[probe], probe_offsets=[len(prefix)]
    )
    last = engine.generate(extended, lambda s: SteeringPlan(), short, probes=[probe])
    assert abs(skipped.probe_scores["p"] - alone.probe_scores["p"]) < 1e-4
    assert abs(last.probe_scores["p"] - alone.probe_scores["p"]) > 1e-4
    with pytest.raises(PlanError, match="probe offsets"):
        engine.generate(extended, None, short, probes=[probe], probe_offsets=[len(extended)])


def test_a_probe_reading_several_layers_averages_them(engine) -> None:
    hidden = engine.fingerprint.hidden_size
    d1, d3 = (torch.nn.functional.normalize(torch.randn(hidden), dim=0) for _ in range(2))
    probe = _probe((1, d1, 0.5, 2.0), (3, d3, -1.0, 1.0))
    seen: list[dict[str, float]] = []
    engine.generate(PROMPT, lambda s: seen.append(dict(s)) or SteeringPlan(),
                    GenerationParams(max_new_tokens=1), probes=[probe])
    states = engine.activations([PROMPT], [1, 3])
    want = ((float(states[1][0] @ d1) - 0.5) / 2.0 + (float(states[3][0] @ d3) + 1.0)) / 2
    assert len(seen) == 1 and abs(seen[0]["p"] - want) < 1e-3  # resolved once, after layer 3
