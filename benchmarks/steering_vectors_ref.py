"""Runs inside benchmarks/.venv-sv (transformers < 5): the steering-vectors library's overhead
on the same model and vector, as a steered/unsteered tokens/s ratio of HF generate."""

import json
import statistics
import sys
import time

import torch
from safetensors.torch import load_file
from steering_vectors import SteeringVector
from transformers import AutoConfig, AutoModelForCausalLM

# The prompt arrives as token ids: a tokenizer saved by transformers 5 does not load in 4.
model_dir, vec_file, tokens, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ids = torch.tensor([json.loads(sys.argv[5])])
# Built from config plus weights: older caches lack the safetensors "format" tag v4 wants.
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
model.load_state_dict(load_file(f"{model_dir}/model.safetensors"), strict=False)
model.tie_weights()
model = model.float().eval()
vector = SteeringVector(layer_activations=torch.load(vec_file), layer_type="decoder_block")


def run() -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return time.perf_counter() - start


def steered() -> float:
    with vector.apply(model):
        return run()


run()
steered()
pairs = [(run(), steered()) for _ in range(repeats)]
print(
    json.dumps(
        {
            "steering_vectors_vs_unsteered_hf_generate": statistics.median(a / b for a, b in pairs),
            "unsteered_hf_generate_tokens_per_s": tokens / min(a for a, _ in pairs),
        }
    )
)
