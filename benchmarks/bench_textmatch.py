"""What the bounded text predicates cost at their worst (steerguard/policy/textmatch.py):

- a hostile regex, `(a|aa)+$` on "a" * 5000 + "b", which backtracks without end: the time
  until the `regex` module's timeout stops it (REGEX_TIMEOUT_S, 50 ms);
- a 200-word keyword list over text without any of the words, at 20,000, 200,000 and
  2,000,000 characters: linear, so the time per character stays about the same once the
  text outgrows the CPU caches.

    python benchmarks/bench_textmatch.py [--repeats 21]

Writes benchmarks/results/textmatch.json. Needs no model."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write
from steerguard.policy import textmatch
from steerguard.policy.errors import EvaluationError
from steerguard.policy.textmatch import BoundedRegex, KeywordMatcher


def timed_ms(call: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)


def hostile_search() -> None:
    try:
        BoundedRegex(r"(a|aa)+$").search("a" * 5000 + "b")
    except EvaluationError:
        return
    raise AssertionError("the hostile pattern finished instead of timing out")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=21)
    args = parser.parse_args()
    hostile = timed_ms(hostile_search, args.repeats)
    matcher = KeywordMatcher([f"word{i}" for i in range(200)])
    scans = {}
    for chars in (20_000, 200_000, 2_000_000):
        text = ("nothing to see " * (chars // 15 + 1))[:chars]
        scans[chars] = timed_ms(lambda t=text: matcher.search(t), args.repeats)

    def row(times: list[float]) -> dict[str, float]:
        return {"p50_ms": round(statistics.median(times), 3), "max_ms": round(times[-1], 3)}

    results = {
        "hostile regex until its timeout": {**row(hostile),
                                            "timeout_ms": textmatch.REGEX_TIMEOUT_S * 1e3},
        **{f"keywords (200) over {chars} characters": {
            **row(t), "ns_per_char": round(statistics.median(t) * 1e6 / chars, 1)}
           for chars, t in scans.items()},
    }
    for name, value in results.items():
        print(f"{name:>40}: {value}")
    path = write("textmatch", {"repeats": args.repeats, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
