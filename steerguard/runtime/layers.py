"""Find the decoder layers (the residual-stream blocks) of any causal LM."""

from __future__ import annotations

from torch import nn

from steerguard.errors import ModelLoadError

# Attribute paths of the decoder block list, by family. Tried in order; the fallback below
# covers architectures not listed here.
_KNOWN_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2, Gemma 2, Phi-3, SmolLM
    "model.language_model.layers",  # multimodal wrappers
    "transformer.h",  # GPT-2, GPT-J, Falcon
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "transformer.blocks",  # MPT
)


def _resolve(model: nn.Module, path: str) -> nn.Module | None:
    node: nn.Module | None = model
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """Return the model's decoder blocks in order (index = our layer index)."""
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for path in _KNOWN_PATHS:
        found = _resolve(model, path)
        fits = isinstance(found, nn.ModuleList) and len(found) > 0
        if fits and (expected is None or len(found) == expected):
            return found
    # Fallback: the longest ModuleList whose length matches the config's layer count.
    candidates = [
        m
        for m in model.modules()
        if isinstance(m, nn.ModuleList) and (expected is None or len(m) == expected)
    ]
    if candidates:
        return max(candidates, key=len)
    raise ModelLoadError(
        f"cannot find the decoder layers of {type(model).__name__}: looked for "
        f"{', '.join(_KNOWN_PATHS)} and any ModuleList of {expected} blocks"
    )
