from __future__ import annotations

import pytest
import torch
from torch import nn

from steerguard.directions.probe import ActivationProbe, ProbeLayer
from steerguard.directions.vector import ExtractionInfo, SteeringVector
from steerguard.runtime.engine import SteeringEngine
from steerguard.runtime.layers import decoder_layers
from steerguard.runtime.loading import LoadedModel


def random_vector(loaded: LoadedModel, name: str = "rand", seed: int = 1) -> SteeringVector:
    generator = torch.Generator().manual_seed(seed)
    fp = loaded.fingerprint
    return SteeringVector(
        name=name,
        fingerprint=fp,
        directions={
            layer: torch.randn(fp.hidden_size, generator=generator)
            for layer in range(fp.num_layers)
        },
        extraction=ExtractionInfo(method="random"),
    )


def engine_with_vectors(loaded: LoadedModel, *names: str) -> SteeringEngine:
    engine = SteeringEngine(loaded)
    for seed, name in enumerate(names or ("rand",), start=1):
        engine.add_vector(random_vector(loaded, name, seed))
    return engine


def weights_snapshot(loaded: LoadedModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}


def trace_layers(model: nn.Module, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The indices of the decoder layers that run, in order, from now to the test's end."""
    ran: list[int] = []
    for index, layer in enumerate(decoder_layers(model)):
        def traced(*args, _original=layer.forward, _index=index, **kwargs):
            ran.append(_index)
            return _original(*args, **kwargs)

        monkeypatch.setattr(layer, "forward", traced)
    return ran


def seeded_probe(loaded: LoadedModel, layer: int, seed: int) -> ActivationProbe:
    """Probe "p" reading one random unit direction at `layer`; scores are raw readings."""
    direction = torch.nn.functional.normalize(
        torch.randn(loaded.fingerprint.hidden_size, generator=torch.Generator().manual_seed(seed)),
        dim=0)
    return ActivationProbe(name="p", threshold=0.0, scale=1.0, parts=(
        ProbeLayer(layer=layer, direction=tuple(direction.tolist()), center=0.0, spread=1.0),))
