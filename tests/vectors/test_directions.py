"""Steering vectors and activation probes share one layer: one fingerprint and fit check, one
library on disk, one type the runtime reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steerguard.directions import (
    ActivationProbe,
    DirectionLibrary,
    ExtractionInfo,
    ModelFingerprint,
    ProbeLayer,
    SteeringVector,
    fit_problem,
)
from steerguard.errors import VectorError
from steerguard.policy.errors import PolicyError
from steerguard.policy.loader import load_bundle_text
from steerguard.runtime.plan import Positions, PositionScope

FP = ModelFingerprint(model_id="org/m-1", architecture="LlamaForCausalLM", hidden_size=4,
                      num_layers=3)


def _probe(width: int = 4, layers: tuple[int, ...] = (1,), model: str | None = "org/m-1"
           ) -> ActivationProbe:
    parts = tuple(ProbeLayer(layer=la, direction=(0.5,) * width) for la in layers)
    return ActivationProbe(name="c", parts=parts, threshold=0.0, scale=1.0, model=model)


def _vector(fp: ModelFingerprint = FP) -> SteeringVector:
    return SteeringVector(name="v", fingerprint=fp, extraction=ExtractionInfo(method="t"),
                          directions={0: torch.ones(fp.hidden_size)})


@pytest.mark.parametrize(("made_for", "width", "layers", "problem"), [
    (FP, 4, (0, 2), None),
    (FP.model_copy(update={"architecture": "Qwen2ForCausalLM"}), 4, (0,),
     "architecture 'Qwen2ForCausalLM', the model has 'LlamaForCausalLM'"),
    (FP.model_copy(update={"num_layers": 30}), 4, (0,), "layer count 30, the model has 3"),
    ("org/m-1", 4, (2,), None),
    ("org/other", 4, (2,), "model 'org/other', the model is 'org/m-1'"),
    (None, 64, (1,), "hidden size 64, the model has 4"),
    (None, 4, (1, 3, 7), "layers 3, 7, the model has layers 0..2"),
])
def test_one_fit_check_for_both_kinds(  # type: ignore[no-untyped-def]
        made_for, width, layers, problem) -> None:
    assert fit_problem(FP, made_for=made_for, width=width, layers=layers) == problem


def test_vectors_and_probes_are_refused_by_the_same_check() -> None:
    other = FP.model_copy(update={"model_type": "qwen2"})
    with pytest.raises(VectorError, match="does not fit this model: model type 'qwen2'"):
        _vector(other).check_fits(FP)
    assert _probe().fit_problem(FP) is None
    assert _probe(width=8).fit_problem(FP) == "hidden size 8, the model has 4"
    assert _probe(model="org/other").fit_problem(FP) == "model 'org/other', the model is 'org/m-1'"
    assert _probe(layers=(1, 5)).fit_problem(FP) == "layer 5, the model has layers 0..2"


def test_one_library_keeps_both_per_model(tmp_path: Path) -> None:
    library = DirectionLibrary(FP, vectors=tmp_path / "vectors", probes=tmp_path / "probes")
    assert library.save_vector(_vector()) == tmp_path / "vectors" / "org_m-1" / "v.safetensors"
    assert library.vector_names() == ["v"] and library.load_vector("v").content_hash()
    assert library.load_probe("rev1", "c", (1,)) is None
    path = library.save_probe("rev1", _probe())
    assert path == tmp_path / "probes" / "org_m-1" / "rev1" / "c-L1.json"
    assert library.load_probe("rev1", "c", (1,)) == _probe()
    # a probe kept there for another model is not used
    path.write_text(_probe(model="org/other").model_dump_json(), encoding="utf-8")
    assert library.load_probe("rev1", "c", (1,)) is None
    with pytest.raises(VectorError, match="letters, digits"):
        library.probe_path("../up", "c", (1,))
    with pytest.raises(VectorError, match="no vector 'w'"):
        library.load_vector("w")


def test_positions_are_typed_from_the_bundle_file_on() -> None:
    text = ("name: t\nrevision: '1'\nvectors:\n"
            "  v: {layers: [1], strength: 0.1, positions: last_3}\n"
            "rules:\n  - id: r\n    when: {all: []}\n"
            "    apply: [{vector: v, positions: generated}]\n")
    bundle = load_bundle_text(text, "t.yaml")
    assert bundle.spec.vectors["v"].positions == Positions(scope=PositionScope.LAST_N, n=3)
    (apply,) = bundle.rules[0].applies
    assert apply.positions == Positions(scope=PositionScope.GENERATED)
    assert bundle.spec.model_dump(mode="json")["vectors"]["v"]["positions"] == "last_3"
    with pytest.raises(PolicyError) as err:
        load_bundle_text(text.replace("last_3", "last_0"), "t.yaml")
    issue = err.value.issues[0]
    assert issue.field == "vectors.v.positions" and issue.line == 4
    assert "expected all, prompt, generated or last_N" in issue.message
