"""How long loading a policy bundle takes: the shipped one, synthetic ones of 100 and 1000
rules (bench_policy.py's), and every broken or hostile bundle of the test corpus
(tests/policy/hostile.py), whose errors must come within a second. Also the side by side
that keeps the collector pause in steerguard.inputfiles.parse_yaml (parse with it and without
it, alternating, on the 1000-rule bundle).

    python benchmarks/bench_policy_load.py        # writes benchmarks/results/policy_load.json
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_policy import synthetic_bundle
from benchmarks.common import write
from steerguard import inputfiles
from steerguard.policy.errors import PolicyError
from steerguard.policy.loader import load_bundle, load_bundle_text
from steerguard.resources import default_bundle_path
from tests.policy.hostile import CASES, write_corpus

REPEATS = 5


CPU: dict[str, float] = {}  # median CPU time of the process, beside each wall-clock median


def _median_ms(run: object, label: str, repeats: int = REPEATS) -> float:
    """Median wall-clock ms; the median CPU ms goes to CPU[label] (on a shared machine the
    wall clock also counts the time other jobs had the cores)."""
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU[label] = round(statistics.median(cpu) * 1e3, 1)
    return round(statistics.median(times) * 1e3, 1)


def _refuse(path: Path) -> None:
    try:
        load_bundle(path)
    except PolicyError:
        return
    raise AssertionError(f"{path} loaded")


def _refuse_text(text: str) -> None:
    try:
        load_bundle_text(text, "bench.yaml")
    except PolicyError:
        return
    raise AssertionError("the broken bundle loaded")


def collector_side_by_side(text: str, rounds: int = 10) -> dict[str, float]:
    """parse_yaml with the collector paused (as shipped) and with it left running."""
    running = types.SimpleNamespace(isenabled=lambda: False, disable=lambda: None,
                                    enable=lambda: None)
    paused_ms, running_ms = [], []
    try:
        for _ in range(rounds):
            for gc_module, out in ((gc, paused_ms), (running, running_ms)):
                inputfiles.gc = gc_module  # type: ignore[assignment]
                t0 = time.perf_counter()
                inputfiles.parse_yaml(text, "bench.yaml")
                out.append((time.perf_counter() - t0) * 1e3)
    finally:
        inputfiles.gc = gc
    paused, collecting = statistics.median(paused_ms), statistics.median(running_ms)
    return {"paused_ms": round(paused, 1), "collecting_ms": round(collecting, 1),
            "saved": round(1 - paused / collecting, 3)}


def main() -> None:
    loads = {"shipped": _median_ms(lambda: load_bundle(default_bundle_path()),
                                   "shipped")}
    for n in (100, 1000):
        text = synthetic_bundle(n)
        label = f"{n}_rules"
        loads[label] = _median_ms(lambda t=text: load_bundle_text(t, "bench.yaml"), label)
        print(f"{n} rules ({len(text) // 1024} KiB): {loads[label]} ms, cpu {CPU[label]} ms")
    # the largest broken bundle that is still parsed and checked whole: one rule wrong
    wrong = synthetic_bundle(1000).replace("vector: ", "vector: no-such-", 1)
    label = "1000_rules_one_wrong"
    loads[label] = _median_ms(lambda: _refuse_text(wrong), label)
    print(f"1000 rules, one wrong: {loads[label]} ms, cpu {CPU[label]} ms")
    print(f"shipped bundle: {loads['shipped']} ms, cpu {CPU['shipped']} ms")

    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_corpus(Path(tmp))
        broken = {name: _median_ms(lambda p=corpus / name: _refuse(p), f"broken:{name}")
                  for name in CASES}
    slowest = max(broken, key=broken.__getitem__)
    print(f"{len(broken)} broken bundles: slowest {slowest} {broken[slowest]} ms (cpu "
          f"{CPU['broken:' + slowest]} ms), median {statistics.median(broken.values())} ms")

    gc_pause = collector_side_by_side(synthetic_bundle(1000))
    print(f"parse of the 1000-rule bundle: {gc_pause['paused_ms']} ms with the collector "
          f"paused, {gc_pause['collecting_ms']} ms without ({gc_pause['saved']:.0%} saved)")
    path = write("policy_load", {
        "benchmark": "policy bundle load time",
        "target": "every broken bundle refused within 1 s",
        "load_average": os.getloadavg(),
        "median_ms": loads,
        "median_cpu_ms": CPU,
        "broken_median_ms": broken,
        "broken_slowest": slowest,
        "collector_pause": gc_pause,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
