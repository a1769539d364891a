"""The shipped vectors are what the shipped concept datasets give on the bundled model.

Rewrite them with `steerguard vectors build --force --root steerguard/policies/vectors`.
"""

from __future__ import annotations

import pytest
import torch

from steerguard.resources import concepts_dir, shipped_vectors_dir
from steerguard.vectors.datasets import load_concept, load_concepts
from steerguard.vectors.extraction import extract
from steerguard.vectors.storage import load_vector

SHIPPED = shipped_vectors_dir() / "smollm2-135m"
NAMES = sorted(c.meta.name for c in load_concepts(concepts_dir()))
# Float32 sums on CPUs of different makers differ in the last bits; a mean over hundreds of
# token activations then moves in the fifth or sixth digit. These bounds are far above that
# and far below what any change of data, model or method gives.
MIN_COSINE = 0.9999
MAX_RELATIVE_DIFF = 1e-3


def test_every_shipped_concept_has_a_shipped_vector_and_nothing_else() -> None:
    assert sorted(p.stem for p in SHIPPED.glob("*.safetensors")) == NAMES


@pytest.mark.real_model
@pytest.mark.parametrize("name", NAMES)
def test_shipped_vector_equals_a_rebuild_on_this_model(real_engine, name: str) -> None:
    shipped = load_vector(SHIPPED / f"{name}.safetensors", real_engine.fingerprint)
    concept = load_concept(concepts_dir() / name)
    assert shipped.extraction.dataset_hash == concept.dataset_hash, "stale: rebuild (see top)"
    rebuilt = extract(real_engine, concept)  # the defaults `steerguard vectors build` uses

    ex, again = shipped.extraction, rebuilt.extraction
    assert (ex.method, ex.pooling, ex.dataset, ex.settings) == (
        again.method, again.pooling, again.dataset, again.settings
    )
    assert shipped.layers == rebuilt.layers
    for layer in rebuilt.layers:
        a, b = shipped.directions[layer], rebuilt.directions[layer]
        cosine = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
        relative = float((a - b).norm() / b.norm())
        assert cosine >= MIN_COSINE and relative <= MAX_RELATIVE_DIFF, (layer, cosine, relative)
    # Held-out separation counts pairs (a fraction of 13): it moves only if a pair flips.
    one_pair = 1 / ex.settings["heldout_pairs"]
    for layer, score in again.layer_scores.items():
        assert abs(ex.layer_scores[layer] - score) <= one_pair + 1e-9, layer
