"""Requests refused at vLLM's front door, probes read through a prefill of their own, and the
prefix cache keyed by plan."""

from __future__ import annotations

import pytest
import torch

from steerguard.directions.probe import ActivationProbe, ProbeLayer
from steerguard.runtime.engine import GenerationParams
from steerguard.runtime.plan import SteeringPlan
from tests.vllm.conftest import PROMPTS, messages, needs_vllm

pytestmark = [needs_vllm, pytest.mark.real_model]


def _raw(backend, ids, extra_args, max_tokens=4):
    """One request straight to vLLM's engine, as an OpenAI client's vllm_xargs would send it."""
    from vllm import SamplingParams

    async def go():
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, extra_args=extra_args)
        outputs = [o async for o in backend.engine.generate(
            {"prompt_token_ids": ids}, params, request_id="raw")]
        return outputs[-1]

    return backend.run(go())


@pytest.mark.parametrize(("payload", "says"), [
    ({"interventions": "all of them"}, "interventions"),
    ({"interventions": [{"vector_hash": "0123456789abcdef", "coefficients": {"3": 1.0}}]},
     "no vector with content hash 0123456789abcdef"),
    ({"reads": [{"layers": [1]}]}, "reads need a report key"),
    ({"version": 2}, "version"),
])
def test_a_bad_plan_is_refused_before_it_runs(vllm_backend, payload, says):
    from vllm.exceptions import VLLMValidationError

    ids = vllm_backend.encode(messages(PROMPTS[0]))
    with pytest.raises(VLLMValidationError, match=says):
        _raw(vllm_backend, ids, {"steerguard": payload})
    assert vllm_backend.worker_status() == [{"plans": 0, "requests": 0, "ledgers": 0}]


def test_a_plan_sent_as_extra_args_steers_like_the_backend(vllm_backend):
    plan = SteeringPlan.single("sentiment", 0.08, range(30))
    ids = vllm_backend.encode(messages(PROMPTS[4]))
    wire = vllm_backend.wire(plan)
    payload = wire.model_copy(update={"report": None, "full_prefill": False}).extra_args()
    raw = _raw(vllm_backend, ids, payload, max_tokens=12)
    via_backend = vllm_backend.generate(ids, plan, GenerationParams(max_new_tokens=12))
    assert tuple(raw.outputs[0].token_ids)[: len(via_backend.token_ids)] == via_backend.token_ids
    assert vllm_backend.worker_status() == [{"plans": 0, "requests": 0, "ledgers": 0}]


def _long_prompt():
    """Longer than two cache blocks (vLLM caches whole blocks: 128 tokens on CPU)."""
    return messages(" ".join(PROMPTS * 3) + " Answer only the last question, briefly.")


def test_prefix_cache_never_crosses_plans(vllm_backend, real_engine):
    params = GenerationParams(max_new_tokens=12)
    prompt = _long_prompt()
    steer = SteeringPlan.single("formality", 0.1, range(30), positions="prompt")
    plain = real_engine.generate(prompt, None, params)
    steered = real_engine.generate(prompt, steer, params)
    prompt_len = len(real_engine.encode(prompt))
    assert prompt_len > 2 * vllm_backend.engine.vllm_config.cache_config.block_size
    vllm_backend.exact_reports = False  # let steered rows read the cache
    try:
        vllm_backend.generate(prompt, None, params)  # the unsteered prompt is cached now
        first = vllm_backend.generate(prompt, steer, params)
        assert first.token_ids == steered.token_ids
        # every prompt position ran under the plan: nothing came from the unsteered blocks
        assert {m.positions_affected for m in first.reports[0].layers} == {prompt_len}
        second = vllm_backend.generate(prompt, steer, params)
        assert second.token_ids == steered.token_ids
        # the same plan did reuse the first request's steered blocks
        assert max(m.positions_affected for m in second.reports[0].layers) < prompt_len
        assert vllm_backend.generate(prompt, None, params).token_ids == plain.token_ids
    finally:
        vllm_backend.exact_reports = True
    exact = vllm_backend.generate(prompt, steer, params)
    assert {m.positions_affected for m in exact.reports[0].layers} == {prompt_len}


def test_probes_choose_the_plan_after_a_prefill_of_their_own(vllm_backend, real_engine):
    direction = torch.nn.functional.normalize(torch.randn(576, generator=torch.Generator()
                                                          .manual_seed(3)), dim=0)
    values = tuple(direction.tolist())
    probes = [ActivationProbe(name="mood", threshold=0.0, scale=1.0, parts=(
        ProbeLayer(layer=8, direction=values, center=0.5, spread=2.0),
        ProbeLayer(layer=12, direction=values, center=-0.5, spread=3.0)))]
    chosen = SteeringPlan.single("empathy", 0.08, range(4, 26))
    seen: dict[str, list[dict[str, float]]] = {"hf": [], "vllm": []}

    def resolver(where):
        def resolve(scores):
            seen[where].append(dict(scores))
            return chosen if len(seen[where]) % 2 else SteeringPlan.empty()
        return resolve

    params = GenerationParams(max_new_tokens=16)
    prompts = [messages(PROMPTS[5]), messages(PROMPTS[6])]
    for prompt in prompts:
        hf = real_engine.generate(prompt, resolver("hf"), params, probes=probes,
                                  probe_offsets=[2])
        got = vllm_backend.generate(prompt, resolver("vllm"), params, probes=probes,
                                    probe_offsets=[2])
        assert got.token_ids == hf.token_ids
        assert got.probe_scores["mood"] == pytest.approx(hf.probe_scores["mood"], abs=1e-3)
        assert len(got.reports) == len(hf.reports)
    assert [s["mood"] for s in seen["vllm"]] == pytest.approx(
        [s["mood"] for s in seen["hf"]], abs=1e-3)
    # probes beside a fixed plan are read in the same request
    fixed = vllm_backend.generate(prompts[0], chosen, params, probes=probes)
    hf_fixed = real_engine.generate(prompts[0], chosen, params, probes=probes)
    assert fixed.probe_scores["mood"] == pytest.approx(hf_fixed.probe_scores["mood"], abs=1e-3)


def test_hf_only_options_are_refused_with_the_reason(vllm_backend):
    from steerguard.errors import PlanError

    with pytest.raises(PlanError, match="hf backend"):
        vllm_backend.generate("hi", None, GenerationParams(return_logits=True))
    with pytest.raises(PlanError, match="hf backend"):
        vllm_backend.generate("hi", None, logits_processor=lambda ids, logits: logits)
