"""Build steering vectors from contrastive pairs: mean difference or PCA of differences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from rich.progress import Progress

from steerguard.directions.vector import ExtractionInfo, SteeringVector
from steerguard.runtime.activations import Pooling
from steerguard.runtime.engine import SteeringEngine
from steerguard.vectors.datasets import Concept, ContrastPair

Method = Literal["mean_diff", "pca_diff"]
HOLDOUT_EVERY = 5  # every 5th pair is held out to score layers, the rest build the vector


def pair_prompts(engine: SteeringEngine, pair: ContrastPair) -> tuple[list[int], list[int]]:
    """Token ids of the positive and negative text, as the model's own answer when a prompt
    is given (chat template up to the answer, no end-of-turn token)."""
    if pair.prompt is None:
        return engine.encode(pair.positive), engine.encode(pair.negative)
    head = engine.encode([{"role": "user", "content": pair.prompt}])
    tail = engine.tokenizer
    return (
        head + tail(pair.positive, add_special_tokens=False)["input_ids"],
        head + tail(pair.negative, add_special_tokens=False)["input_ids"],
    )


def _activations(
    engine: SteeringEngine,
    pairs: Sequence[ContrastPair],
    layers: Sequence[int],
    pooling: Pooling,
    label: str,
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    batch = 8
    positive: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    negative: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    with Progress(transient=True) as progress:
        task = progress.add_task(f"reading activations: {label}", total=len(pairs))
        for start in range(0, len(pairs), batch):
            chunk = [pair_prompts(engine, p) for p in pairs[start : start + batch]]
            prompts = [ids for two in chunk for ids in two]  # pos, neg, pos, neg, ...
            acts = engine.activations(prompts, layers, pooling=pooling)
            for layer in layers:
                positive[layer].append(acts[layer][0::2])
                negative[layer].append(acts[layer][1::2])
            progress.advance(task, len(chunk))
    return (
        {layer: torch.cat(v) for layer, v in positive.items()},
        {layer: torch.cat(v) for layer, v in negative.items()},
    )


def direction(pos: torch.Tensor, neg: torch.Tensor, method: Method) -> torch.Tensor:
    """One layer's direction from paired activations [n, hidden]."""
    diffs = (pos - neg).double()
    mean = diffs.mean(0)
    if method == "mean_diff":
        return mean.float()
    # First right singular vector of the uncentered differences: the axis that explains most of
    # their energy. Centering would remove exactly the shared offset the concept consists of.
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    unit = vh[0]
    if float(unit @ mean) < 0:
        unit = -unit
    return (unit * (unit @ mean)).float()  # keep the mean difference's size along it


def separation(pos: torch.Tensor, neg: torch.Tensor, vector: torch.Tensor) -> float:
    """Fraction of pairs whose positive text projects further along `vector` than its negative."""
    return float(((pos - neg) @ vector > 0).float().mean())


def effect_size(pos: torch.Tensor, neg: torch.Tensor, vector: torch.Tensor) -> float:
    """Mean over spread of the paired projection gaps: separates layers where accuracy ties."""
    gaps = (pos - neg) @ (vector / vector.norm())
    return float(gaps.mean() / gaps.std().clamp(min=1e-6)) if len(gaps) > 1 else 0.0


def recommend_layers(
    scores: dict[int, float], effects: dict[int, float], num_layers: int, width: int = 5
) -> list[int]:
    """A band of `width` layers around the best-separating middle layer.

    The first and last fifth of the network are left out: early layers carry token identity
    and late ones the output distribution, and steering there tends to break fluency.
    """
    low, high = num_layers // 5, num_layers - num_layers // 5
    middle = {layer: s for layer, s in scores.items() if low <= layer < high} or scores
    best = max(middle, key=lambda layer: (round(middle[layer], 2), effects.get(layer, 0.0)))

    start = max(low, min(best - width // 2, high - width))
    return [layer for layer in range(start, start + width) if layer in scores]


def extract(
    engine: SteeringEngine,
    concept: Concept,
    *,
    method: Method = "mean_diff",
    pooling: Pooling = "mean_skip_first",
    layers: Sequence[int] | None = None,
) -> SteeringVector:
    """Build the concept's vector for every layer (or `layers`); deterministic for given data."""
    layers = list(layers) if layers is not None else list(range(engine.fingerprint.num_layers))
    pairs = list(concept.pairs)
    held = [p for i, p in enumerate(pairs) if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1]
    train = [p for i, p in enumerate(pairs) if i % HOLDOUT_EVERY != HOLDOUT_EVERY - 1]
    pos, neg = _activations(engine, pairs, layers, pooling, concept.meta.name)
    train_rows = torch.tensor([i % HOLDOUT_EVERY != HOLDOUT_EVERY - 1 for i in range(len(pairs))])
    scores: dict[int, float] = {}
    effects: dict[int, float] = {}
    directions: dict[int, torch.Tensor] = {}
    for layer in layers:
        p_train, n_train = pos[layer][train_rows], neg[layer][train_rows]
        vec = direction(p_train, n_train, method)
        held_pos, held_neg = pos[layer][~train_rows], neg[layer][~train_rows]
        scores[layer] = separation(held_pos, held_neg, vec) if held else 1.0
        effects[layer] = effect_size(held_pos, held_neg, vec) if held else 0.0
        # The stored vector uses every pair; the score above never saw the held-out ones.
        directions[layer] = direction(pos[layer], neg[layer], method)
    info = ExtractionInfo(
        method=method,
        pooling=pooling,
        dataset=f"concepts/{concept.folder.name}",
        dataset_hash=concept.dataset_hash,
        settings={"pairs": len(pairs), "train_pairs": len(train), "heldout_pairs": len(held)},
        layer_scores=scores,
        layer_effects=effects,
        recommended_layers=tuple(recommend_layers(scores, effects, engine.fingerprint.num_layers)),
    )
    return SteeringVector(
        name=concept.meta.name,
        fingerprint=engine.fingerprint,
        directions=directions,
        extraction=info,
        description=concept.meta.description,
    )
