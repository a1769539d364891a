"""Save and load SteeringVectors as safetensors (tensors "layer.N", metadata as JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from steerguard.canonical import digest
from steerguard.directions.fingerprint import ModelFingerprint
from steerguard.directions.vector import ExtractionInfo, SteeringVector
from steerguard.errors import VectorError

_META_KEY = "steerguard"
FORMAT_VERSION = "1"


def save_vector(vector: SteeringVector, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"layer.{layer}": vector.directions[layer].contiguous() for layer in vector.layers}
    meta = {**vector.metadata(), "content_hash": vector.content_hash(), "format": FORMAT_VERSION}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta)})
    tmp.replace(path)  # readers never see a half-written file
    return path


def load_vector(path: Path, fingerprint: ModelFingerprint | None = None) -> SteeringVector:
    """Read a vector; with `fingerprint`, refuse one built for another model."""
    path = Path(path)
    if not path.is_file():
        raise VectorError(f"vector file {path} does not exist")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(_META_KEY)
    except (SafetensorError, OSError) as exc:
        raise VectorError(f"{path}: not a readable safetensors file ({exc})") from exc
    if raw is None:
        raise VectorError(f"{path}: no steerguard metadata; import foreign vectors instead")
    try:
        meta = json.loads(raw)
        vector = SteeringVector(
            name=meta["name"],
            description=meta.get("description", ""),
            fingerprint=ModelFingerprint.model_validate(meta["fingerprint"]),
            extraction=ExtractionInfo.model_validate(meta["extraction"]),
            directions={
                int(key.removeprefix("layer.")): t.to(torch.float32) for key, t in tensors.items()
            },
        )
    except (KeyError, ValueError, ValidationError) as exc:
        raise VectorError(f"{path}: malformed vector ({exc})") from exc
    stored = meta.get("content_hash")
    if stored and stored != vector.content_hash():
        if stored != _plain_json_hash(vector):
            raise VectorError(
                f"{path}: content hash {vector.content_hash()} differs from the recorded "
                f"{stored}; the file was altered"
            )
        vector._hash = stored  # intact, and policies pin the recorded hash
    if fingerprint is not None:
        vector.check_fits(fingerprint)
    return vector


def _plain_json_hash(vector: SteeringVector) -> str:
    """A hash a format-1 file may record: the digest with its metadata as Python's json module
    writes it. It differs from the canonical digest only for metadata with numbers below 1e-4
    or text beyond ASCII; such a file is intact and keeps its recorded hash."""
    meta = json.dumps(vector.metadata(), sort_keys=True, separators=(",", ":"))
    return digest(meta, *vector.tensor_bytes(), size=16)
