"""A tiny random-weight Llama with random concept vectors: the eval pipeline end to end, fast."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from steerguard.resources import concepts_dir as shipped_concepts

CONCEPTS = ("sentiment", "concision")


@pytest.fixture(scope="session")
def tiny_engine():
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from steerguard.runtime.engine import SteeringEngine
    from steerguard.runtime.loading import bundled_model_dir, wrap_model
    from steerguard.vectors.steering_vector import ExtractionInfo, SteeringVector

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    engine = SteeringEngine(wrap_model(model, tokenizer, "tiny"))
    for name in CONCEPTS:
        engine.add_vector(SteeringVector(
            name=name, fingerprint=engine.fingerprint,
            directions={layer: torch.randn(64) for layer in range(4)},
            extraction=ExtractionInfo(method="mean_diff", recommended_layers=(1, 2)),
        ))
    return engine


@pytest.fixture
def concepts_dir(tmp_path: Path) -> Path:
    """Copies of two shipped concepts (their yaml is edited by --record)."""
    root = tmp_path / "concepts"
    for name in CONCEPTS:
        shutil.copytree(shipped_concepts() / name, root / name)
    return root


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    """A bundle declaring one activation condition with a small dataset."""
    folder = tmp_path / "bundle"
    data = tmp_path / "conditions" / "upset"
    data.mkdir(parents=True)
    folder.mkdir()
    pos = ["I am so angry right now!", "This is a disaster, I am panicking.",
           "I'm furious about this.", "I can't cope anymore."]
    neg = ["What time is it?", "How do I reset my password?", "Where is my order?",
           "Tell me about the weather."]
    for split in ("train", "eval"):
        lines = [{"text": t, "label": True} for t in pos] + [{"text": t, "label": False}
                                                              for t in neg]
        (data / f"{split}.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (folder / "bundle.yaml").write_text(
        "name: t\nactivations:\n  upset: {layer: 1, dataset: ../conditions/upset}\n"
    )
    return folder
