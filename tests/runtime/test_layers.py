import pytest
import torch

from steerguard.runtime.engine import GenerationParams
from steerguard.runtime.hooks import hook_count
from steerguard.runtime.layers import decoder_layers
from steerguard.runtime.plan import SteeringPlan
from tests.models import LAYERS, TINY_CONFIGS, tiny_model
from tests.runtime.helpers import engine_with_vectors


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_layers_found_and_steering_changes_output(arch: str) -> None:
    loaded = tiny_model(arch)
    assert len(decoder_layers(loaded.model)) == LAYERS
    assert loaded.fingerprint.num_layers == LAYERS
    engine = engine_with_vectors(loaded)
    params = GenerationParams(max_new_tokens=6, return_logits=True)
    prompt = [{"role": "user", "content": "hello there"}]
    plain = engine.generate(prompt, None, params)
    zero = engine.generate(prompt, SteeringPlan.single("rand", 0.0, [1, 2]), params)
    steered = engine.generate(prompt, SteeringPlan.single("rand", 2.0, [1, 2]), params)
    assert zero.token_ids == plain.token_ids
    assert torch.equal(zero.logits, plain.logits)
    assert not torch.allclose(steered.logits[0], plain.logits[0])
    assert [m.layer for m in steered.reports[0].layers] == [1, 2]
    assert hook_count(loaded.model) == 0


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_a_probe_resolved_plan_gives_the_plan_s_own_logits(arch: str) -> None:
    """The second prefill (replayed below the steered layer where the cache allows it, run
    whole where it does not) ends where the plan applied from the start does."""
    from steerguard.directions.probe import ActivationProbe, ProbeLayer

    loaded = tiny_model(arch)
    engine = engine_with_vectors(loaded)
    direction = torch.nn.functional.normalize(torch.randn(loaded.fingerprint.hidden_size), dim=0)
    probe = ActivationProbe(name="p", threshold=0.0, scale=1.0, parts=(
        ProbeLayer(layer=3, direction=tuple(direction.tolist()), center=0.0, spread=1.0),))
    params = GenerationParams(max_new_tokens=4, return_logits=True)
    prompt = [{"role": "user", "content": "hello there"}]
    steer = SteeringPlan.single("rand", 2.0, [2])
    fixed = engine.generate(prompt, steer, params)
    resolved = engine.generate(prompt, lambda scores: steer, params, probes=[probe])
    assert resolved.token_ids == fixed.token_ids
    torch.testing.assert_close(resolved.logits, fixed.logits)
    assert hook_count(loaded.model) == 0
