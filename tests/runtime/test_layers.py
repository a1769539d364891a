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
