"""Vectors on disk, one folder per model: build from concepts once, load afterwards."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from steerguard.errors import VectorError
from steerguard.home import steerguard_home
from steerguard.resources import shipped_vectors_dir
from steerguard.runtime.engine import SteeringEngine
from steerguard.vectors.datasets import load_concepts
from steerguard.vectors.fingerprint import ModelFingerprint
from steerguard.vectors.steering_vector import SteeringVector
from steerguard.vectors.storage import load_vector, save_vector

if TYPE_CHECKING:
    from steerguard.runtime.activations import Pooling
    from steerguard.vectors.extraction import Method

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _slug(fingerprint: ModelFingerprint) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", fingerprint.model_id).strip("_") or "model"


class VectorLibrary:
    """`root/<model>/<name>.safetensors`; default root is $STEERGUARD_HOME/vectors.

    `build` takes a vector from `shipped/<model>/` (default: the package's own, built for the
    bundled model) when it was made from the same data, method and pooling for this model,
    and extracts it only otherwise.
    """

    def __init__(
        self, fingerprint: ModelFingerprint, root: Path | None = None, shipped: Path | None = None
    ) -> None:
        self.fingerprint = fingerprint
        self.folder = Path(root or steerguard_home() / "vectors") / _slug(fingerprint)
        self.shipped = Path(shipped or shipped_vectors_dir()) / _slug(fingerprint)

    def path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise VectorError(f"vector name {name!r}: use letters, digits, '_', '.', '-' only")
        return self.folder / f"{name}.safetensors"

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.safetensors"))

    def load(self, name: str) -> SteeringVector:
        path = self.path(name)
        if not path.is_file():
            known = ", ".join(self.names()) or "none; run `steerguard vectors build`"
            raise VectorError(f"no vector {name!r} in {self.folder} (have: {known})")
        return load_vector(path, self.fingerprint)

    def load_all(self) -> list[SteeringVector]:
        return [self.load(name) for name in self.names()]

    def save(self, vector: SteeringVector) -> Path:
        vector.check_fits(self.fingerprint)
        return save_vector(vector, self.path(vector.name))

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
