from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from steerguard.errors import VectorError
from steerguard.resources import concepts_dir
from steerguard.vectors.datasets import load_concept
from steerguard.vectors.extraction import direction, extract
from steerguard.vectors.gguf_io import export_gguf, import_gguf
from steerguard.vectors.library import VectorLibrary
from steerguard.vectors.steering_vector import ExtractionInfo, SteeringVector
from steerguard.vectors.storage import load_vector, save_vector
from tests.models import tiny_model
from tests.runtime.helpers import random_vector

CONCEPTS = concepts_dir()


@pytest.fixture(scope="module")
def loaded():
    return tiny_model("llama")


def test_safetensors_round_trip_keeps_hash(loaded, tmp_path) -> None:
    vector = random_vector(loaded)
    path = save_vector(vector, tmp_path / "v.safetensors")
    again = load_vector(path, loaded.fingerprint)
    assert again.content_hash() == vector.content_hash()
    assert all(torch.equal(again.directions[k], vector.directions[k]) for k in vector.layers)


def test_gguf_export_then_import_gives_the_same_vector(loaded, tmp_path) -> None:
    import gguf

    vector = random_vector(loaded)
    assert 0 in vector.layers
    path = export_gguf(vector, tmp_path / "v.gguf")
    names = [t.name for t in gguf.GGUFReader(str(path)).tensors]
    assert "direction.0" not in names  # llama.cpp refuses the whole file if it is there
    back = import_gguf(path, "v", loaded.fingerprint)
    assert back.layers == [layer for layer in vector.layers if layer >= 1]
    for layer in back.layers:
        assert torch.equal(back.directions[layer], vector.directions[layer])


def test_gguf_import_refuses_other_model_type(loaded, tmp_path) -> None:
    other = tiny_model("gpt2")
    path = export_gguf(random_vector(other), tmp_path / "gpt2.gguf")
    with pytest.raises(VectorError, match="model type 'gpt2'"):
        import_gguf(path, "v", loaded.fingerprint)


def test_wrong_size_nan_and_foreign_vectors_are_refused(loaded) -> None:
    fp = loaded.fingerprint
    info = ExtractionInfo(method="test")
    with pytest.raises(VectorError, match=r"expected shape \(64,\)"):
        SteeringVector(name="x", fingerprint=fp, directions={0: torch.ones(65)}, extraction=info)
    bad = torch.ones(fp.hidden_size)
    bad[3] = float("nan")
    with pytest.raises(VectorError, match="NaN"):
        SteeringVector(name="x", fingerprint=fp, directions={0: bad}, extraction=info)
    with pytest.raises(VectorError, match="layer out of range"):
        SteeringVector(name="x", fingerprint=fp, directions={99: torch.ones(64)}, extraction=info)
    foreign = random_vector(tiny_model("qwen2"))
    with pytest.raises(VectorError, match="does not fit this model: architecture"):
        foreign.check_fits(fp)


def test_altered_file_is_refused(loaded, tmp_path) -> None:
    path = save_vector(random_vector(loaded), tmp_path / "v.safetensors")
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    tensors["layer.0"] = tensors["layer.0"] * 2
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(VectorError, match="was altered"):
        load_vector(path)
    record = json.loads(meta["steerguard"])
    assert record["name"] == "rand"


def test_directions_point_from_negative_to_positive() -> None:
    torch.manual_seed(0)
    axis = torch.nn.functional.normalize(torch.randn(16), dim=0)
    neg = torch.randn(40, 16)
    pos = neg + 3 * axis + 0.1 * torch.randn(40, 16)
    for method in ("mean_diff", "pca_diff"):
        d = direction(pos, neg, method)
        assert torch.nn.functional.cosine_similarity(d, axis, dim=0) > 0.95, method


def test_extraction_is_deterministic_and_library_caches(loaded, tmp_path) -> None:
    from steerguard.runtime.engine import SteeringEngine

    engine = SteeringEngine(loaded)
    concept = load_concept(CONCEPTS / "sentiment")
    small = concept.model_copy(update={"pairs": concept.pairs[:10]})
    first, second = extract(engine, small), extract(engine, small)
    assert first.content_hash() == second.content_hash()
    assert set(first.extraction.layer_scores) == set(range(4))
    pca = extract(engine, small, method="pca_diff", pooling="last")
    assert pca.content_hash() != first.content_hash()

    library = VectorLibrary(loaded.fingerprint, tmp_path)
    library.save(first)
    assert library.names() == ["sentiment"]
    assert library.load("sentiment").content_hash() == first.content_hash()
    with pytest.raises(VectorError, match="no vector 'nope'"):
        library.load("nope")
    with pytest.raises(VectorError, match="use letters"):
        library.path("../evil")


def _small_concepts(root: Path, pairs: int) -> Path:
    """The shipped sentiment concept cut to its first `pairs` pairs, under `root`."""
    folder = root / "sentiment"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONCEPTS / "sentiment" / "concept.yaml", folder)
    lines = (CONCEPTS / "sentiment" / "train.jsonl").read_text().splitlines()[:pairs]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_library_copies_a_fitting_shipped_vector_and_extracts_otherwise(loaded, tmp_path) -> None:
    from steerguard.runtime.engine import SteeringEngine

    engine = SteeringEngine(loaded)
    concepts = _small_concepts(tmp_path / "concepts", 10)
    made = extract(engine, load_concept(concepts / "sentiment"))
    # Same data, method and pooling as an extraction; only the description tells them apart.
    marked = SteeringVector(name=made.name, fingerprint=made.fingerprint,
                            directions=made.directions, extraction=made.extraction,
                            description="the shipped copy")
    shipped = VectorLibrary(loaded.fingerprint, tmp_path / "shipped")
    shipped.save(marked)

    library = VectorLibrary(loaded.fingerprint, tmp_path / "home", shipped=tmp_path / "shipped")
    (got,) = library.build(engine, concepts)
    assert got.description == "the shipped copy"
    assert library.path("sentiment").read_bytes() == shipped.path("sentiment").read_bytes()
    assert library.load("sentiment").content_hash() == marked.content_hash()

    (forced,) = library.build(engine, concepts, force=True)
    assert forced.description != "the shipped copy"

    other_pooling = VectorLibrary(loaded.fingerprint, tmp_path / "h2", shipped=tmp_path / "shipped")
    (last,) = other_pooling.build(engine, concepts, pooling="last")
    assert last.description != "the shipped copy" and last.extraction.pooling == "last"

    _small_concepts(tmp_path / "concepts", 12)  # other data: the shipped vector is stale
    fresh = VectorLibrary(loaded.fingerprint, tmp_path / "h3", shipped=tmp_path / "shipped")
    (rebuilt,) = fresh.build(engine, concepts)
    assert rebuilt.description != "the shipped copy"
    assert rebuilt.extraction.dataset_hash == load_concept(concepts / "sentiment").dataset_hash


def test_rebuilding_the_shipped_library_in_place_extracts(loaded, tmp_path) -> None:
    from steerguard.runtime.engine import SteeringEngine

    engine = SteeringEngine(loaded)
    concepts = _small_concepts(tmp_path / "concepts", 10)
    library = VectorLibrary(loaded.fingerprint, tmp_path / "shipped", shipped=tmp_path / "shipped")
    (first,) = library.build(engine, concepts)
    _small_concepts(tmp_path / "concepts", 12)
    (second,) = library.build(engine, concepts)
    assert second.extraction.dataset_hash != first.extraction.dataset_hash
    assert library.load("sentiment").content_hash() == second.content_hash()


def test_concept_errors_name_file_and_line(tmp_path) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "concept.yaml").write_text("name: c\n")
    (folder / "train.jsonl").write_text('{"positive": "a", "negative": "b"}\n{"positive": 1}\n')
    with pytest.raises(VectorError, match=r"train.jsonl:2: field 'positive'"):
        load_concept(folder)


@pytest.mark.parametrize(
    "name", ["sentiment", "formality", "empathy", "caution", "concision", "refusal"]
)
def test_shipped_concepts_have_enough_disjoint_data(name: str) -> None:
    concept = load_concept(CONCEPTS / name)
    assert len(concept.pairs) >= 60
    assert len(concept.eval_prompts) >= 16
    train_prompts = {p.prompt for p in concept.pairs}
    assert not train_prompts & {p.prompt for p in concept.eval_prompts}
