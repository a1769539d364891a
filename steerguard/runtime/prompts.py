"""Prompts as token ids: chat messages (the model's template), a plain string, or ids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

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
