"""Prompts as token ids: chat messages (the model's template), a plain string, or ids."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from steerguard.errors import PlanError

Message = Mapping[str, str]
Prompt = Sequence[Message] | Sequence[int] | str


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> list[int]:
    if isinstance(prompt, str):
        return list(tokenizer(prompt)["input_ids"])
    if prompt and isinstance(prompt[0], int):
        return [int(t) for t in prompt]  # type: ignore[arg-type]
    messages = [dict(m) for m in prompt]  # type: ignore[union-attr]
    if tokenizer.chat_template:
        return list(
            tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        )
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    return list(tokenizer(text)["input_ids"])


def encode_rows(
    encode: Callable[[Prompt], list[int]],
    prompts: Sequence[Prompt],
    plans: Sequence[object],
    probe_offsets: Sequence[int] | None,
) -> tuple[list[list[int]], list[int]]:
    """A batch's prompts as `encode` gives their token ids, and each row's probe offset
    (default 0), checked as every backend checks them: one plan per prompt, at least one
    prompt, none that encodes to no tokens, and one offset per prompt, each below its length
    (PlanError)."""
    if len(prompts) != len(plans):
        raise PlanError(f"{len(prompts)} prompts but {len(plans)} plans")
    if not prompts:
        raise PlanError("generate_batch needs at least one prompt")
    encoded = [encode(p) for p in prompts]
    if any(not ids for ids in encoded):
        raise PlanError("a prompt encodes to no tokens")
    offsets = list(probe_offsets) if probe_offsets is not None else [0] * len(prompts)
    if len(offsets) != len(prompts) or any(
        not 0 <= o < len(ids) for o, ids in zip(offsets, encoded, strict=True)
    ):
        raise PlanError(
            f"probe offsets {offsets} must give one offset per prompt, each below its length"
        )
    return encoded, offsets
