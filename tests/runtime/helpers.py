from __future__ import annotations

import torch

from steerguard.directions.vector import ExtractionInfo, SteeringVector
from steerguard.runtime.engine import SteeringEngine
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
