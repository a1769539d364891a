"""Steering overhead on the bundled model: steered vs unsteered tokens/s, measured side by side.

    python benchmarks/bench_steering.py [--repeats 7] [--tokens 64] [--steering-vectors]

Modes alternate inside every repeat, so drift of a shared machine hits all of them alike; the
reported ratios are medians of per-repeat ratios. All 30 layers are steered with one vector.
`--steering-vectors` also runs the steering-vectors library (it needs transformers < 5, so it
runs in its own venv, benchmarks/.venv-sv, created on first use) on the same vector.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import QUESTIONS, median_ratio, write
from steerguard.directions.vector import ExtractionInfo, SteeringVector
from steerguard.runtime.engine import GenerationParams, SteeringEngine
from steerguard.runtime.layers import decoder_layers
from steerguard.runtime.loading import bundled_model_dir, load_model
from steerguard.runtime.plan import SteeringPlan


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--steering-vectors", action="store_true")
    args = parser.parse_args()

    loaded = load_model()
    engine = SteeringEngine(loaded)
    fp = loaded.fingerprint
    generator = torch.Generator().manual_seed(0)
    directions = {
        layer: torch.randn(fp.hidden_size, generator=generator) for layer in range(fp.num_layers)
    }
    names = [f"v{i}" for i in range(8)]
    for i, name in enumerate(names):
        gen = torch.Generator().manual_seed(i)
        engine.add_vector(
            SteeringVector(
                name=name,
                fingerprint=fp,
                directions={k: torch.randn(fp.hidden_size, generator=gen) for k in directions},
                extraction=ExtractionInfo(method="random"),
            )
        )
    all_layers = list(range(fp.num_layers))
    strength = 0.002  # small, so every mode generates the same number of tokens
    params = GenerationParams(max_new_tokens=args.tokens)
    # min tokens: ignore EOS by forcing length via a long-answer prompt set and checking counts.
    prompt = [{"role": "user", "content": QUESTIONS[0]}]
    one_plan = SteeringPlan.single("v0", strength, all_layers)
    batch_prompts = [[{"role": "user", "content": p}] for p in QUESTIONS]
    batch_plans = [SteeringPlan.single(n, strength, all_layers) for n in names]

    layers = decoder_layers(loaded.model)
    unit = (directions[0] / directions[0].norm()) * strength * float(engine.layer_norms[0])

    def minimal_hook_run() -> None:
        # The reference point: the least a Python forward hook can do (no measurement, no scope).
        handles = [layer.register_forward_hook(lambda _m, _i, out: out + unit) for layer in layers]
        try:
            engine.generate(prompt, None, params)
        finally:
            for handle in handles:
                handle.remove()

    counts = {
        "unsteered": engine.generate(prompt, None, params).completion_tokens,
        "steered": engine.generate(prompt, one_plan, params).completion_tokens,
    }
    modes = {
        "unsteered_b1": lambda: engine.generate(prompt, None, params),
        "steerguard_b1": lambda: engine.generate(prompt, one_plan, params),
        "minimal_hook_b1": minimal_hook_run,
        "unsteered_b8": lambda: engine.generate_batch(batch_prompts, [None] * 8, params),
        "steerguard_b8_8plans": lambda: engine.generate_batch(batch_prompts, batch_plans, params),
    }
    for fn in modes.values():  # warm up
        fn()
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode, fn in modes.items():
            times[mode].append(timed(fn))

    def ratio(num: str, den: str) -> float:
        # tokens/s ratio = inverse time ratio (same token counts)
        return median_ratio(list(zip(times[den], times[num], strict=True)))

    tokens_b1 = counts["unsteered"]
    result = {
        "command": "python benchmarks/bench_steering.py " + " ".join(sys.argv[1:]),
        "tokens": args.tokens,
        "repeats": args.repeats,
        "layers_steered": len(all_layers),
        "tokens_generated": counts,
        "unsteered_b1_tokens_per_s": tokens_b1 / min(times["unsteered_b1"]),
        "ratios": {
            "steerguard_b1_vs_unsteered": ratio("steerguard_b1", "unsteered_b1"),
            "minimal_hook_b1_vs_unsteered": ratio("minimal_hook_b1", "unsteered_b1"),
            "steerguard_b8_8plans_vs_unsteered_b8": ratio("steerguard_b8_8plans", "unsteered_b8"),
        },
        "targets": {
            "steerguard_b1_vs_unsteered": 0.98,
            "steerguard_b8_8plans_vs_unsteered_b8": 0.95,
        },
    }
    if args.steering_vectors:
        result["steering_vectors"] = run_steering_vectors(
            directions, strength, engine, args, engine.encode(prompt)
        )
    path = write("steering", result)
    print(json.dumps(result, indent=2))
    print(f"wrote {path}")


def run_steering_vectors(directions, strength, engine, args, prompt_ids) -> dict[str, object]:
    """Run the steering-vectors library in its own venv on the same vector and model files."""
    venv = Path(__file__).resolve().parent / ".venv-sv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "torch==2.13.0",
                "transformers<5",
                "steering-vectors",
            ],
            check=True,
        )
    vec_file = venv / "vector.pt"
    scaled = {
        layer: (d / d.norm()) * strength * float(engine.layer_norms[layer])
        for layer, d in directions.items()
    }
    torch.save(scaled, vec_file)
    script = Path(__file__).resolve().parent / "steering_vectors_ref.py"
    out = subprocess.run(
        [
            str(python),
            str(script),
            str(bundled_model_dir()),
            str(vec_file),
            str(args.tokens),
            str(args.repeats),
            json.dumps(prompt_ids),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
