"""Helpers shared by the benchmarks: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path

from steerguard.eval.machine import cpu_name

RESULTS = Path(__file__).resolve().parent / "results"

# The user turns the steering benchmarks generate for (bench_steering.py, bench_vllm.py), the
# same on both backends so their costs compare.
QUESTIONS = (
    "Tell me about the sea.",
    "How do I reset my password?",
    "What should I cook tonight?",
    "Describe a quiet morning in the city.",
    "Why is the sky blue?",
    "Give me tips for a job interview.",
    "What is a good name for a cat?",
    "How do plants grow?",
)


def machine() -> dict[str, object]:
    import torch
    import transformers

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def median_ratio(pairs: list[tuple[float, float]]) -> float:
    """Median of per-repeat ratios a/b: robust to the noise of a shared machine."""
    return statistics.median(a / b for a, b in pairs)


def write(name: str, payload: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path
