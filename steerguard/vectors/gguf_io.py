"""llama.cpp control vectors (GGUF, arch "controlvector"), as read by `--control-vector` and
written by repeng. Tensor "direction.N" is added to the output of decoder layer N (0-based),
the same layer convention steerguard uses, except that llama.cpp has no slot for layer 0: it
rejects a file with "direction.0", so export leaves that layer out."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

from steerguard.directions.fingerprint import ModelFingerprint
from steerguard.directions.vector import ExtractionInfo, SteeringVector
from steerguard.errors import VectorError

_ARCH = "controlvector"


def model_hint(fingerprint: ModelFingerprint) -> str:
    """llama.cpp's model_hint is the model type, e.g. "llama" for LlamaForCausalLM."""
    return fingerprint.model_type or fingerprint.architecture.removesuffix("ForCausalLM").lower()


LLAMA_CPP_FIRST_LAYER = 1  # llama.cpp refuses "direction.0" ("invalid (zero) ... index")


def exportable_layers(vector: SteeringVector) -> list[int]:
    return [layer for layer in vector.layers if layer >= LLAMA_CPP_FIRST_LAYER]


def export_gguf(vector: SteeringVector, path: Path) -> Path:
    """Write the vector's layers from 1 up (see the module note on layer 0)."""
    layers = exportable_layers(vector)
    if not layers:
        raise VectorError(
            f"vector {vector.name!r} has only layer 0, which llama.cpp control vectors cannot "
            "hold (their layers start at 1)"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), _ARCH)
    writer.add_string(f"{_ARCH}.model_hint", model_hint(vector.fingerprint))
    writer.add_uint32(f"{_ARCH}.layer_count", len(layers))
    for layer in layers:
        writer.add_tensor(f"direction.{layer}", vector.directions[layer].detach().float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _field_text(reader: gguf.GGUFReader, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None or not field.parts:
        return None
    return bytes(field.parts[-1]).decode("utf-8", errors="replace")


def import_gguf(path: Path, name: str, fingerprint: ModelFingerprint) -> SteeringVector:
    """Read a control vector for the model with `fingerprint`; refuses other shapes."""
    path = Path(path)
    if not path.is_file():
        raise VectorError(f"control vector file {path} does not exist")
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise VectorError(f"{path}: not a GGUF file ({exc})") from exc
    arch = _field_text(reader, "general.architecture")
    if arch != _ARCH:
        raise VectorError(f"{path}: architecture is {arch!r}, expected {_ARCH!r}")
    hint = _field_text(reader, f"{_ARCH}.model_hint")
    if hint is not None and hint != model_hint(fingerprint):
        raise VectorError(
            f"{path}: made for model type {hint!r}, this model is {model_hint(fingerprint)!r}"
        )
    directions: dict[int, torch.Tensor] = {}
    for tensor in reader.tensors:
        if not tensor.name.startswith("direction."):
            continue
        suffix = tensor.name.removeprefix("direction.")
        if not suffix.isdigit():
            raise VectorError(f"{path}: tensor {tensor.name!r} is not direction.<layer>")
        data = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
        directions[int(suffix)] = torch.from_numpy(data.copy())
    if not directions:
        raise VectorError(f"{path}: holds no direction.<layer> tensors")
    return SteeringVector(
        name=name,
        fingerprint=fingerprint,
        directions=directions,
        extraction=ExtractionInfo(method="imported:gguf", dataset=path.name),
        description=f"imported from {path.name}",
    )
