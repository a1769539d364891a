"""Where an audit record's time goes, part by part, without Redis: the plan hash, building the
drafts, sealing (model_dump, canonical JSON and SHA-256), the script call's arguments, and
parsing a stored record back (the query's main cost). Each part is timed over new request
objects, in rounds, beside its reference where there is one:

- pydantic's parse of a stored record, against orjson.loads of the same bytes;
- the default mask rules over the engine's explanations and over one long word, against the
  plain patterns they replaced.

    python benchmarks/bench_audit_parts.py [--requests 3000] [--rounds 5]

Writes benchmarks/results/audit_parts.json. Needs no Redis and no model."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_audit import MODEL, request
from benchmarks.common import RESULTS, machine
from steerguard.audit.build import RecordBuilder, RequestItem
from steerguard.audit.chain import ChainHead
from steerguard.audit.config import DEFAULT_MASKS, MaskRule
from steerguard.audit.masking import Masker
from steerguard.audit.records import Draft, Outcome, parse_record
from steerguard.audit.sealed import Sealed
from steerguard.audit.sink import RedisSink


def per_item_us(fn: Callable[[Any], object], items: Sequence[Any], per: int = 1) -> float:
    """Microseconds per call of fn over items, divided by `per` (records per item)."""
    t = time.perf_counter()
    for x in items:
        fn(x)
    return (time.perf_counter() - t) / (len(items) * per) * 1e6


def queued(n: int) -> list[RequestItem]:
    """n requests as record() queues them, each made of new objects."""
    now = int(time.time() * 1000)
    items = []
    for i in range(n):
        d, r = request(i)
        items.append(RequestItem(
            [f"bench-{i}-{k}" for k in range(3)], now, d, r.reports, r, Outcome.completed(),
            "req", f"s{i % 50}", f"u{i % 100}", MODEL, "hello", None, None, None, None))
    return items


def one_round(n: int) -> dict[str, float]:
    items = queued(n)
    builder = RecordBuilder(b"k" * 32, Masker(DEFAULT_MASKS), store_user_id=False,
                            store_text=False)
    out = {"plan_hash_us_per_plan": per_item_us(lambda it: it.decision.plan.content_hash(),
                                                 items)}
    drafts: list[list[Draft]] = []
    out["build_us_per_record"] = per_item_us(
        lambda it: drafts.append(builder.build(it)[0]), items, per=3)
    chain, sealed = ChainHead("bench"), []

    def seal(ds: list[Draft]) -> None:
        sealed.extend(Sealed.seal(chain, draft) for draft in ds)

    out["seal_us_per_record"] = per_item_us(seal, drafts, per=3)
    batches = [sealed[k:k + 512] for k in range(0, len(sealed), 512)]
    out["argv_us_per_record"] = per_item_us(
        lambda run: RedisSink._argv("tag", run[0].chain, run, -1, probe=False), batches,
        per=512)
    payloads = [s.payload for s in sealed]
    out["parse_us_per_record"] = per_item_us(parse_record, payloads)
    out["orjson_loads_us_per_record"] = per_item_us(orjson.loads, payloads)
    out.update(mask_round([it.decision.explanation for it in items]))
    return out


# The plain patterns the default mask rules match as: the same matches, but scanned from
# every position (tests/audit/test_records.py checks the matches agree).
PLAIN_MASKS = (MaskRule(name="email", pattern=r"[\w.+-]+@[\w-]+\.[\w.-]+"),
               MaskRule(name="long_number", pattern=r"\b(?:\d[ -]?){9,}\d\b"))


def mask_round(explanations: list[str]) -> dict[str, float]:
    """The default rules against the plain patterns: over the engine's explanations (no
    masker memory: each text once), and over one 2,000-letter word."""
    word = ["a" * 2000] * 20
    out: dict[str, float] = {}
    for name, rules in (("default", DEFAULT_MASKS), ("plain", PLAIN_MASKS)):
        out[f"mask_explanation_us_{name}"] = per_item_us(
            lambda t, rules=rules: Masker(rules)(t), explanations)
        out[f"mask_long_word_ms_{name}"] = per_item_us(
            lambda t, rules=rules: Masker(rules)(t), word) / 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rounds = [one_round(args.requests) for _ in range(args.rounds)]
    med = {k: round(statistics.median(r[k] for r in rounds), 2) for k in rounds[0]}
    out: dict[str, object] = {
        "machine": machine(),
        "requests": args.requests,
        **med,
        # per round, then the median: parts timed side by side in each round
        "mask_explanation_speedup_vs_plain": round(statistics.median(
            r["mask_explanation_us_plain"] / r["mask_explanation_us_default"]
            for r in rounds), 2),
        "parse_vs_orjson_loads": round(statistics.median(
            r["parse_us_per_record"] / r["orjson_loads_us_per_record"] for r in rounds), 2),
    }
    print(json.dumps(out, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "audit_parts.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
