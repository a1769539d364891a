"""Read hidden states of chosen layers without changing them (extraction, probes, norms)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from transformers import PreTrainedModel

from steerguard.runtime.hooks import LayerProgram, active_program, hooks_installed

Pooling = Literal["last", "mean_skip_first"]


class _EnoughLayers(Exception):
    """Raised by the recorder after the last wanted layer: later layers need not run."""


class _Recorder:
    """A LayerProgram that pools and keeps layer outputs, returning them unchanged."""

    def __init__(self, layers: Iterable[int], mask: torch.Tensor, pooling: Pooling) -> None:
        self.layers = set(layers)
        self.last = max(self.layers)
        self.mask = mask
        self.pooling = pooling
        self.pooled: dict[int, torch.Tensor] = {}

    def __call__(self, layer: int, hidden: torch.Tensor) -> None:
        if layer in self.layers:
            self.pooled[layer] = pool(hidden, self.mask, self.pooling)
        if layer == self.last:
            raise _EnoughLayers
        return None


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool [B, T, H] over valid positions of left-padded rows -> [B, H] (float32).

    `mean_skip_first` leaves out each row's first token, whose activations are outliers in
    Llama-family models.
    """
    hidden = hidden.float()
    if pooling == "last":
        return hidden[:, -1, :]
    valid = mask.float().clone()
    first = valid.argmax(dim=1)  # first valid position of each (left-padded) row
    valid[torch.arange(valid.shape[0]), first] = 0.0
    valid = valid.unsqueeze(-1)
    return (hidden * valid).sum(1) / valid.sum(1).clamp(min=1.0)


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-align token lists into [B, T] ids and attention mask."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def observe(
    model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, program: LayerProgram
) -> None:
    """One forward of left-padded `ids` that `program` watches layer by layer (no cache; it may
    stop the pass early by raising _EnoughLayers). Needs `hooks_installed(model)` around it."""
    try:
        with active_program(program):
            model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions_from_mask(mask),
                use_cache=False,
                logits_to_keep=1,
            )
    except _EnoughLayers:
        pass


@torch.inference_mode()
def layer_activations(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    layers: Iterable[int],
    *,
    pad_id: int,
    pooling: Pooling = "last",
    batch_size: int = 16,
) -> dict[int, torch.Tensor]:
    """Pooled outputs of `layers` for each prompt -> {layer: [n, hidden] float32}.

    Prompts run in batches of similar length (less padding) and each forward stops after
    the last wanted layer; rows come back in the order given.
    """
    layers = list(layers)
    if not prompts:
        width = model.get_input_embeddings().embedding_dim
        return {layer: torch.empty(0, width) for layer in layers}
    chunks: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    with hooks_installed(model):
        for start in range(0, len(order), batch_size):
            batch = [prompts[i] for i in order[start : start + batch_size]]
            ids, mask = left_pad(batch, pad_id, device)
            recorder = _Recorder(layers, mask, pooling)
            observe(model, ids, mask, recorder)
            for layer in layers:
                chunks[layer].append(recorder.pooled[layer].cpu())
    restore = torch.argsort(torch.tensor(order))
    return {layer: torch.cat(parts)[restore] for layer, parts in chunks.items()}
