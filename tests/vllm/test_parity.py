"""vLLM with the plugin against the HF engine on the bundled model: the same plans give the
same greedy tokens (on at least 9 of 10 prompts), the same measurements, the same states."""

from __future__ import annotations

import pytest
import torch

from steerguard.runtime.activations import left_pad, positions_from_mask
from steerguard.runtime.engine import GenerationParams
from steerguard.runtime.hooks import active_program, hooks_installed
from steerguard.runtime.plan import Intervention, Operation, Positions, SteeringPlan
from steerguard.runtime.program import SteeringProgram
from tests.vllm.conftest import PROMPTS, messages, needs_vllm

pytestmark = [needs_vllm, pytest.mark.real_model]

ALL_LAYERS = tuple(range(30))
# Eight tokens reach past the prompt into generated-scope steering at half the CI time of 16.
PARAMS = GenerationParams(max_new_tokens=8)


def plan(vector="sentiment", strength=0.06, layers=ALL_LAYERS, op="add", positions="all"):
    return SteeringPlan(interventions=(
        Intervention(vector=vector, strength=strength, layers=tuple(layers), op=Operation(op),
                     positions=Positions.parse(positions)),
    ))


def _configurations() -> dict[str, list[SteeringPlan | None]]:
    n = len(PROMPTS)
    three = [plan(), plan("formality", 0.1, range(8, 20)), plan("empathy", -0.08, range(4, 24))]
    mixed = SteeringPlan(interventions=(
        *plan("sentiment", 0.05, range(0, 30, 2), positions="prompt").interventions,
        *plan("formality", 0.0, (10, 12, 14), op="ablate", positions="generated").interventions,
        *plan("caution", 0.12, (12, 13), op="clamp", positions="last_3").interventions,
    ))
    configurations: dict[str, list[SteeringPlan | None]] = {
        "no plan": [None] * n,
        "one vector on all layers": [plan()] * n,
        "three plans in one batch": [three[i % 3] for i in range(n)],
        "mixed operations and scopes": [mixed, None] * (n // 2),
    }
    for positions in ("all", "prompt", "generated", "last_4"):
        configurations[f"scope {positions}"] = [
            plan("caution", 0.1, range(6, 22), positions=positions)] * n
    for op, strength in (("add", 0.08), ("ablate", 0.0), ("clamp", 0.15)):
        configurations[f"op {op}"] = [plan("formality", strength, range(5, 25), op=op)] * n
    return configurations


CONFIGURATIONS = _configurations()


@pytest.fixture(scope="module")
def runs(vllm_backend, real_engine):
    """Every configuration's rows in one batch per engine (both batch rows; one call each
    costs a fraction of one per configuration)."""
    plans = [p for rows in CONFIGURATIONS.values() for p in rows]
    prompts = [messages(PROMPTS[i % len(PROMPTS)]) for i in range(len(plans))]
    got = vllm_backend.generate_batch(prompts, plans, PARAMS)
    expected = real_engine.generate_batch(prompts, plans, PARAMS)
    out, start = {}, 0
    for name, rows in CONFIGURATIONS.items():
        out[name] = (got[start : start + len(rows)], expected[start : start + len(rows)])
        start += len(rows)
    return out


@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_greedy_tokens_and_measurements_match(runs, name):
    got, expected = runs[name]
    equal = [g.token_ids == e.token_ids for g, e in zip(got, expected, strict=True)]
    assert sum(equal) >= 9, [(g.text, e.text) for g, e in zip(got, expected, strict=True)]
    for same, g, e in zip(equal, got, expected, strict=True):
        assert len(g.reports) == len(e.reports)
        if not same:
            continue
        assert g.finish_reason == e.finish_reason
        for mine, theirs in zip(g.reports, e.reports, strict=True):
            assert mine.vector_hash == theirs.vector_hash
            assert mine.coefficients == pytest.approx(theirs.coefficients, rel=1e-5)
            assert [m.layer for m in mine.layers] == [m.layer for m in theirs.layers]
            for a, b in zip(mine.layers, theirs.layers, strict=True):
                assert a.positions_affected == b.positions_affected
                assert a.delta_norm == pytest.approx(b.delta_norm, rel=1e-3, abs=1e-3)
                assert a.projection_before == pytest.approx(b.projection_before, rel=1e-3, abs=1e-2)
                assert a.projection_after == pytest.approx(b.projection_after, rel=1e-3, abs=1e-2)


def test_the_plans_do_steer(runs):
    plain, _ = runs["no plan"]
    assert all(r.reports == () for r in plain)
    for name in ("one vector on all layers", "op clamp", "scope prompt"):
        steered, _ = runs[name]
        changed = sum(s.token_ids != p.token_ids for s, p in zip(steered, plain, strict=True))
        assert changed >= 5, name


def test_layer_norms_match_the_hf_calibration(vllm_backend, real_engine):
    torch.testing.assert_close(vllm_backend.layer_norms, real_engine.layer_norms, rtol=1e-5,
                               atol=1e-3)


def _hf_state(engine, ids, steering, layer):
    """The HF engine's output of `layer` for every prompt position, before that layer's own
    steering (as the probes read it), with `steering` applied."""
    program = SteeringProgram([steering], engine.vectors, engine.layer_norms,
                              dtype=torch.float32, device=torch.device("cpu"))
    tokens, mask = left_pad([ids], engine.tokenizer.pad_token_id, torch.device("cpu"))
    program.begin_prefill(mask)
    seen = {}

    def watch(index, hidden):
        if index == layer:
            seen["state"] = hidden[0].clone()
        return program(index, hidden)

    with torch.inference_mode(), hooks_installed(engine.model), active_program(watch):
        engine.model(input_ids=tokens, attention_mask=mask,
                     position_ids=positions_from_mask(mask), use_cache=False)
    return seen["state"]


def test_the_steered_hidden_state_matches(vllm_backend, real_engine):
    prompt = messages(PROMPTS[0])
    steering = plan(strength=0.1, layers=range(0, 14))
    layer = 14
    got = vllm_backend.hidden_states(prompt, [layer], steering)[layer]
    expected = _hf_state(real_engine, real_engine.encode(prompt), steering, layer)
    plain = vllm_backend.hidden_states(prompt, [layer])[layer]
    assert (expected - plain).norm() > 10 * (expected - got).norm()  # steering moved it
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=2e-3)


@pytest.mark.parametrize("pooling", ["last", "mean_skip_first"])
def test_activations_match_the_hf_engine(vllm_backend, real_engine, pooling):
    """What vector extraction and probe calibration read, pooled as on the hf backend."""
    prompts = [messages(p) for p in PROMPTS[:4]]
    got = vllm_backend.activations(prompts, [17, 3], pooling=pooling)
    expected = real_engine.activations(prompts, [3, 17], pooling=pooling)
    assert sorted(got) == [3, 17]
    for layer in (3, 17):
        assert got[layer].shape == (4, 576)
        torch.testing.assert_close(got[layer], expected[layer], rtol=1e-3, atol=2e-3)
