"""Steering vectors of one model: built from concepts once (or copied from the shipped ones),
loaded afterwards from the model's DirectionLibrary folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from steerguard.directions.fingerprint import ModelFingerprint
from steerguard.directions.library import DirectionLibrary, model_slug
from steerguard.directions.storage import load_vector
from steerguard.directions.vector import SteeringVector
from steerguard.errors import VectorError
from steerguard.resources import shipped_vectors_dir
from steerguard.runtime.engine import SteeringEngine
from steerguard.vectors.datasets import load_concepts

if TYPE_CHECKING:
    from steerguard.runtime.activations import Pooling
    from steerguard.vectors.extraction import Method


class VectorLibrary:
    """The steering vectors of one model in its DirectionLibrary folder
    (`root/<model>/<name>.safetensors`; default root $STEERGUARD_HOME/vectors).

    `build` takes a vector from `shipped/<model>/` (default: the package's own, built for the
    bundled model) when it was made from the same data, method and pooling for this model,
    and extracts it only otherwise.
    """

    def __init__(
        self, fingerprint: ModelFingerprint, root: Path | None = None, shipped: Path | None = None
    ) -> None:
        self.fingerprint = fingerprint
        self.directions = DirectionLibrary(fingerprint, vectors=root)
        self.folder = self.directions.vector_folder
        self.shipped = Path(shipped or shipped_vectors_dir()) / model_slug(fingerprint)

    def path(self, name: str) -> Path:
        return self.directions.vector_path(name)

    def names(self) -> list[str]:
        return self.directions.vector_names()

    def load(self, name: str) -> SteeringVector:
        return self.directions.load_vector(name)

    def load_all(self) -> list[SteeringVector]:
        return [self.load(name) for name in self.names()]

    def save(self, vector: SteeringVector) -> Path:
        return self.directions.save_vector(vector)

    def build(
        self,
        engine: SteeringEngine,
        concepts_dir: Path,
        *,
        force: bool = False,
        names: set[str] | None = None,
        method: Method = "mean_diff",
        pooling: Pooling = "mean_skip_first",
    ) -> list[SteeringVector]:
        """Make every concept (or those in `names`) whose stored vector is missing or was
        built from other data, or with another method or pooling: copied from the shipped
        vectors when one fits, else extracted. `force` extracts them all."""
        from steerguard.vectors.extraction import extract

        built = []
        for concept in load_concepts(concepts_dir):
            name = concept.meta.name
            if names is not None and name not in names:
                continue
            wanted = (concept.dataset_hash, method, pooling)
            current = None if force else self._fitting(self.path(name), wanted)
            if current is None and not force:
                current = self._copy_shipped(name, wanted)
            if current is None:
                current = extract(engine, concept, method=method, pooling=pooling)
                self.save(current)
            built.append(current)
        return built

    def _fitting(self, path: Path, wanted: tuple[str, str, str]) -> SteeringVector | None:
        """The vector at `path` if it fits the model and was made as `wanted` (dataset hash,
        method, pooling); None when missing, unreadable, for another model or stale."""
        if not path.is_file():
            return None
        try:
            vector = load_vector(path, self.fingerprint)
        except VectorError:
            return None
        ex = vector.extraction
        return vector if (ex.dataset_hash, ex.method, ex.pooling) == wanted else None

    def _copy_shipped(self, name: str, wanted: tuple[str, str, str]) -> SteeringVector | None:
        source = self.shipped / f"{name}.safetensors"
        if source.resolve() == self.path(name).resolve():
            return None  # rebuilding the shipped library itself
        vector = self._fitting(source, wanted)
        if vector is not None:
            # Byte for byte: the copy keeps the content hash that policies may pin.
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.path(name).with_suffix(".tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(self.path(name))
        return vector

    def load_into(
        self,
        engine: SteeringEngine,
        concepts_dir: Path | None = None,
        names: set[str] | None = None,
    ) -> list[str]:
        """Add every stored vector to `engine`, first building the concepts of `concepts_dir`
        (all, or those in `names`) that are missing or stale."""
        if concepts_dir is not None and Path(concepts_dir).is_dir():
            self.build(engine, Path(concepts_dir), names=names)
        vectors = self.load_all()
        for vector in vectors:
            engine.add_vector(vector)
        return [v.name for v in vectors]
