"""Tiny random-weight causal LMs of several architectures, built from configs (no downloads)."""

from __future__ import annotations

from functools import cache

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    Qwen2Config,
)

from steerguard.runtime.loading import LoadedModel, bundled_model_dir, wrap_model

VOCAB = 49152  # the bundled tokenizer's vocabulary, so every tiny model can share it
HIDDEN, LAYERS, HEADS = 64, 4, 4


def _common() -> dict[str, int]:
    return {"vocab_size": VOCAB, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS}


TINY_CONFIGS: dict[str, PretrainedConfig] = {
    "llama": LlamaConfig(
        **_common(), hidden_size=HIDDEN, intermediate_size=128, num_key_value_heads=2
    ),
    "qwen2": Qwen2Config(
        **_common(), hidden_size=HIDDEN, intermediate_size=128, num_key_value_heads=2
    ),
    "mistral": MistralConfig(
        **_common(), hidden_size=HIDDEN, intermediate_size=128, num_key_value_heads=2
    ),
    "gemma2": Gemma2Config(
        **_common(),
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=8,
    ),
    "gpt2": GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS),
    "gpt_neox": GPTNeoXConfig(**_common(), hidden_size=HIDDEN, intermediate_size=128),
    "phi3": Phi3Config(
        **_common(),
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_key_value_heads=2,
        pad_token_id=0,
    ),
}


@cache
def bundled_tokenizer():
    return AutoTokenizer.from_pretrained(bundled_model_dir())


def tiny_model(arch: str = "llama", seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    # An explicit float32 dtype: without it the first forward fails inside RMSNorm here.
    model = AutoModelForCausalLM.from_config(TINY_CONFIGS[arch], dtype=torch.float32)
    return wrap_model(model, bundled_tokenizer(), f"tiny-{arch}")
