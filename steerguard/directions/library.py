"""Where per-model directions live: one folder per model for steering vectors, one for
activation probes fit there. Building them (extraction, calibration) is done above; this
layer finds, loads, fit-checks and stores them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from steerguard.directions.fingerprint import ModelFingerprint
from steerguard.directions.probe import ActivationProbe
from steerguard.directions.storage import load_vector, save_vector
from steerguard.directions.vector import SteeringVector
from steerguard.errors import VectorError
from steerguard.home import steerguard_home

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def model_slug(fingerprint: ModelFingerprint) -> str:
    """The model's folder name: its id with anything but [A-Za-z0-9_.-] replaced."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", fingerprint.model_id).strip("_") or "model"


class DirectionLibrary:
    """`vectors/<model>/<name>.safetensors` and `probes/<model>/<scope>/<name>-L<layers>.json`
    under $STEERGUARD_HOME, or under the roots given."""

    def __init__(self, fingerprint: ModelFingerprint, vectors: Path | None = None,
                 probes: Path | None = None) -> None:
        self.fingerprint = fingerprint
        slug = model_slug(fingerprint)
        self.vector_folder = Path(vectors or steerguard_home() / "vectors") / slug
        self.probe_folder = Path(probes or steerguard_home() / "probes") / slug

    # steering vectors -----------------------------------------------------------------------

    def vector_path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise VectorError(f"vector name {name!r}: use letters, digits, '_', '.', '-' only")
        return self.vector_folder / f"{name}.safetensors"

    def vector_names(self) -> list[str]:
        return sorted(p.stem for p in self.vector_folder.glob("*.safetensors"))

    def load_vector(self, name: str) -> SteeringVector:
        path = self.vector_path(name)
        if not path.is_file():
            known = ", ".join(self.vector_names()) or "none; run `steerguard vectors build`"
            raise VectorError(f"no vector {name!r} in {self.vector_folder} (have: {known})")
        return load_vector(path, self.fingerprint)

    def save_vector(self, vector: SteeringVector) -> Path:
        vector.check_fits(self.fingerprint)
        return save_vector(vector, self.vector_path(vector.name))

    # activation probes ----------------------------------------------------------------------

    def probe_path(self, scope: str, name: str, layers: Iterable[int]) -> Path:
        """A probe fit for `scope` (e.g. a bundle's content hash) reading `layers`."""
        for part in (scope, name):
            if not _NAME.match(part):
                raise VectorError(f"probe {part!r}: use letters, digits, '_', '.', '-' only")
        return self.probe_folder / scope / f"{name}-L{'-'.join(map(str, layers))}.json"

    def load_probe(self, scope: str, name: str, layers: Iterable[int]) -> ActivationProbe | None:
        """The stored probe, if there is one and it fits the model."""
        path = self.probe_path(scope, name, layers)
        if not path.is_file():
            return None
        probe = ActivationProbe.load(path)
        return probe if probe.fit_problem(self.fingerprint) is None else None

    def save_probe(self, scope: str, probe: ActivationProbe) -> Path:
        path = self.probe_path(scope, probe.name, probe.layers)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        probe.save(tmp)
        tmp.replace(path)
        return path
