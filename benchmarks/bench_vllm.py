"""Steering overhead inside vLLM on the bundled model, side by side in one run.

    python benchmarks/bench_vllm.py [--repeats 5] [--tokens 64] [--batches 1,8,32] [--prefix]

Run it with the vLLM venv's python (scripts/setup_vllm.sh); on a GPU the same script runs
vLLM's CUDA build in bfloat16. Modes, per batch size:
  unsteered       no plan
  all layers      one vector on all 30 layers, the same plan on every row
  8 plans         8 distinct plans (vector and strength), every one on all 30 layers
  32 plans        32 distinct plans (at most one per row)
Every row generates exactly --tokens tokens (ignore_eos), and steered rows are measured and
their reports taken from the workers, as VllmBackend does. Modes alternate inside every repeat,
so drift of a shared machine hits them alike; costs are medians of per-repeat ratios. Each run
is timed twice: wall clock (throughput) and the CPU seconds of this process and vLLM's engine
processes (on a CPU box shared with other work, the wall clock mostly measures the others;
CPU time is what the steering itself costs). Both costs are throughput lost: 1 - 1 / (time
steered / time unsteered).
`--prefix` adds rows that share a long system prompt: steered with one plan, computing the
whole prompt (exact reports, the default) against reusing the cached blocks of that plan.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import QUESTIONS, median_ratio, write
from steerguard.runtime.plan import SteeringPlan
from steerguard.vectors.library import VectorLibrary
from steerguard.vllm.backend import VllmBackend

SYSTEM = " ".join(
    f"Rule {i}: answer politely, stay on topic, and keep every answer short and clear."
    for i in range(24)
)
LAYERS = tuple(range(30))


def distinct_plans(names: list[str], count: int) -> list[SteeringPlan]:
    return [
        SteeringPlan.single(names[i % len(names)], 0.02 + 0.004 * i, LAYERS)
        for i in range(count)
    ]


def cpu_seconds() -> float:
    """User and system CPU time of this process and every process it started (vLLM's)."""
    me = psutil.Process(os.getpid())
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


async def run_batch(
    backend: VllmBackend, prompts: list[list[int]], plans: list[SteeringPlan | None],
    tokens: int, *, full_prefill: bool = True,
) -> tuple[float, int]:
    """Seconds for the whole batch (reports included) and tokens generated."""
    from vllm import SamplingParams

    backend.exact_reports = full_prefill
    wires = [backend.wire(p) for p in plans]

    async def one(ids: list[int], wire: Any) -> int:
        params = SamplingParams(
            max_tokens=tokens, temperature=0.0, ignore_eos=True,
            extra_args=wire.extra_args() if wire is not None else None,
        )
        last = None
        async for out in backend.engine.generate({"prompt_token_ids": ids}, params,
                                                 request_id=uuid.uuid4().hex):
            last = out
        assert last is not None
        return len(last.outputs[0].token_ids)

    start = time.perf_counter()
    counts = await asyncio.gather(*(one(ids, w) for ids, w in zip(prompts, wires,
                                                                  strict=True)))
    taken = [(w, len(ids) + n - 1) for ids, w, n in zip(prompts, wires, counts, strict=True)
             if w is not None]
    if taken:
        await backend.take_reports(taken)
    return time.perf_counter() - start, sum(counts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--prefix", action="store_true")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    backend = VllmBackend()
    library = VectorLibrary(backend.fingerprint)
    for vector in library.load_all():
        backend.add_vector(vector)
    names = sorted(backend.vectors)
    if not names:
        raise SystemExit(f"no vectors in {library.folder}; run `steerguard vectors build`")
    backend.layer_norms  # noqa: B018 (computed once, before timing)

    one_plan = distinct_plans(names, 1)[0]
    modes = {
        "unsteered": lambda b: [None] * b,
        "all layers": lambda b: [one_plan] * b,
        "8 plans": lambda b: [distinct_plans(names, 8)[i % 8] for i in range(b)],
        "32 plans": lambda b: [distinct_plans(names, 32)[i % 32] for i in range(b)],
    }
    tok = backend.tokenizer
    rows: list[dict[str, Any]] = []
    for batch in batches:
        prompts = [
            backend.encode([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}])
            for i in range(batch)
        ]
        backend.run(run_batch(backend, prompts, [None] * batch, 4))  # warm-up
        times: dict[str, list[float]] = {m: [] for m in modes}
        cpu: dict[str, list[float]] = {m: [] for m in modes}
        counts: dict[str, int] = {}
        for _ in range(args.repeats):
            for mode, plans in modes.items():
                before = cpu_seconds()
                seconds, counts[mode] = backend.run(run_batch(backend, prompts, plans(batch),
                                                       args.tokens))
                cpu[mode].append(cpu_seconds() - before)
                times[mode].append(seconds)
        for mode in modes:
            tps = [counts[mode] / t for t in times[mode]]
            wall = 1 - 1 / median_ratio(list(zip(times[mode], times["unsteered"], strict=True)))
            spent = 1 - 1 / median_ratio(list(zip(cpu[mode], cpu["unsteered"], strict=True)))
            rows.append({
                "batch": batch, "mode": mode, "tokens_per_s": statistics.median(tps),
                "cost_vs_unsteered": wall if mode != "unsteered" else 0.0,
                "cpu_ms_per_token": 1000 * statistics.median(cpu[mode]) / counts[mode],
                "cpu_cost_vs_unsteered": spent if mode != "unsteered" else 0.0,
            })
            print(f"batch {batch:>3}  {mode:<11} {statistics.median(tps):8.1f} tok/s  "
                  f"cost {rows[-1]['cost_vs_unsteered']:+.1%}  "
                  f"{rows[-1]['cpu_ms_per_token']:7.1f} CPU ms/token  "
                  f"CPU cost {rows[-1]['cpu_cost_vs_unsteered']:+.1%}", flush=True)

    prefix_rows = []
    if args.prefix:
        prompts = [
            tok.apply_chat_template(
                [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}],
                add_generation_prompt=True, tokenize=True, return_dict=False,
            )
            for q in QUESTIONS
        ]
        plan = [one_plan] * len(prompts)
        settings = {
            "unsteered (cache on)": ([None] * len(prompts), True),
            "steered, whole prompt": (plan, True),
            "steered, cached prefix": (plan, False),
        }
        times = {name: [] for name in settings}
        for _ in range(args.repeats):
            for name, (plans, full) in settings.items():
                times[name].append(backend.run(run_batch(backend, prompts, plans, 16,
                                                  full_prefill=full))[0])
        for name in settings:
            prefix_rows.append({"mode": name, "seconds": statistics.median(times[name]),
                                "prompt_tokens": len(prompts[0])})
            print(f"prefix {len(prompts[0])} tokens x {len(prompts)}: {name:<24} "
                  f"{statistics.median(times[name]):.3f} s", flush=True)
    backend.close()
    import vllm

    path = write("vllm", {
        "vllm": vllm.__version__, "tokens": args.tokens, "repeats": args.repeats,
        "results": rows, "prefix": prefix_rows,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
