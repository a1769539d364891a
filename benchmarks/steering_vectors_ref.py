"""Runs inside benchmarks/.venv-sv (transformers < 5): the steering-vectors library's overhead
on the same model and vector, as a steered/unsteered tokens/s ratio of HF generate."""

import json
import statistics
import sys
import time

import torch
from steering_vectors import SteeringVector
from transformers import AutoModelForCausalLM, AutoTokenizer

model_dir, vec_file, tokens, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
vector = SteeringVector(layer_activations=torch.load(vec_file), layer_type="decoder_block")
ids = tok.apply_chat_template(
    [{"role": "user", "content": "Tell me about the sea."}],
    add_generation_prompt=True,
    return_tensors="pt",
)


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
