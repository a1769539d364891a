"""Typical hidden-state norm per layer: the unit in which intervention strengths are given."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from steerguard.runtime.activations import left_pad, observe, pool
from steerguard.runtime.hooks import hooks_installed

# Neutral text of ordinary length; the first token of each is left out of the mean.
CALIBRATION_TEXTS = (
    "The library opens at nine in the morning and closes at six in the evening.",
    "Please send the signed form back to us by the end of the week.",
    "Rain is expected across the region tomorrow, with clearer skies on Sunday.",
    "She added the numbers twice to be sure the total was right.",
    "Our order shipped on Monday and should arrive within three business days.",
    "The recipe needs two cups of flour, one egg and a pinch of salt.",
    "He asked whether the meeting could be moved to Thursday afternoon.",
    "You can change your password from the account settings page at any time.",
)


class _NormRecorder:
    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask
        self.norms: dict[int, float] = {}

    def __call__(self, layer: int, hidden: torch.Tensor) -> None:
        per_token = hidden.float().norm(dim=-1, keepdim=True)  # [B, T, 1]
        self.norms[layer] = float(pool(per_token, self.mask, "mean_skip_first").mean())


@torch.inference_mode()
def layer_norms(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, num_layers: int
) -> torch.Tensor:
    """Mean L2 norm of each layer's output per token over the calibration texts.

    Strength s at layer l means a vector of norm s * layer_norms[l].
    """
    prompts = [tokenizer(text)["input_ids"] for text in CALIBRATION_TEXTS]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, mask = left_pad(prompts, pad, next(model.parameters()).device)
    recorder = _NormRecorder(mask)
    with hooks_installed(model):
        observe(model, ids, mask, recorder)
    return torch.tensor([recorder.norms[layer] for layer in range(num_layers)])
