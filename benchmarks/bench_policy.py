"""Decision latency of the policy engine for 10, 100 and 1000 synthetic rules.

Rules mix keyword, regex, profile, context, tool and all/any/not conditions (no activation
conditions), and a few percent of them match the request, like a real bundle. A separate
row adds activation conditions to 10% of 100 rules to show their engine-side cost (the
projection itself runs in the runtime, inside the prefill).

    python benchmarks/bench_policy.py            # prints a table, writes results/policy.json
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import yaml

from steerguard.policy.engine import PolicyEngine
from steerguard.policy.inputs import ChatMessage, RequestContext, ToolCall, UserProfile
from steerguard.policy.loader import load_bundle_text

WORDS = [f"term{i}" for i in range(400)]
VECTORS = ["empathy", "caution", "formality", "sentiment", "concision", "refusal"]


def synthetic_bundle(n_rules: int, activation_every: int = 0, seed: int = 0) -> str:
    rng = random.Random(seed)
    rules = []
    for i in range(n_rules):
        kind = i % 6
        if kind == 0:
            when = {"keywords": {"words": rng.sample(WORDS, 5)}}
        elif kind == 1:
            when = {"regex": {"pattern": rf"\border\s+#?{rng.randint(100, 999)}\d*\b"}}
        elif kind == 2:
            when = {"profile": {"field": "age_band", "equals": rng.choice(["minor", "senior"])}}
        elif kind == 3:
            when = {
                "all": [
                    {
                        "context": {
                            "field": "channel",
                            "equals": rng.choice(["sms", "voice", "chat", "email"]),
                        }
                    },
                    {"not": {"profile": {"field": "tier", "equals": "gold"}}},
                ]
            }
        elif kind == 4:
            when = {"tool": {"requested": [f"tool_{rng.randint(0, 50)}"]}}
        else:
            when = {
                "any": [
                    {"keywords": {"in": "turns", "last": 3, "words": rng.sample(WORDS, 3)}},
                    {
                        "profile": {
                            "field": "score",
                            "range": {"min": (lo := rng.random() * 10), "max": lo + 0.3},
                        }
                    },
                ]
            }
        if activation_every and i % activation_every == 0:
            when = {"all": [when, {"activation": {"condition": "harmful", "threshold": 0.7}}]}
        rules.append(
            {
                "id": f"r{i:04d}",
                "priority": rng.randint(0, 100),
                "group": f"g{rng.randint(0, 20)}" if rng.random() < 0.3 else None,
                "when": when,
                "apply": [
                    {"vector": rng.choice(VECTORS), "strength": round(rng.uniform(-0.4, 0.4), 2)}
                ],
            }
        )
    for r in rules:
        if r["group"] is None:
            del r["group"]
    doc = {
        "name": "bench",
        "revision": "1",
        "on_error": "open",
        "limits": {"max_total_strength": 1.0, "max_vectors": 4},
        "vectors": {v: {"layers": "8-14", "strength": 0.3} for v in VECTORS},
        "profile": {
            "age_band": {"type": "enum", "values": ["minor", "adult", "senior"]},
            "tier": {"type": "enum", "values": ["gold", "silver"]},
            "score": {"type": "number", "min": 0, "max": 11},
        },
        "context": {"channel": {"type": "enum", "values": ["chat", "sms", "voice", "email"]}},
        "activations": {"harmful": {"layer": 6}},
        "rules": rules,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def request() -> tuple[list[ChatMessage], UserProfile, RequestContext, dict[str, float]]:
    messages = [
        ChatMessage(role="system", content="You are the support assistant of an online shop."),
        ChatMessage(role="user", content="Hi, my order 12345 never arrived and I term7 need it."),
        ChatMessage(role="assistant", content="", tool_calls=(ToolCall(name="tool_3"),)),
        ChatMessage(role="tool", name="tool_3", content="order 12345: in transit"),
        ChatMessage(
            role="user", content="That is what it said last week too. Please term42 help, now."
        ),
    ]
    profile = UserProfile(user_id="u-1", age_band="adult", tier="silver", score=7.5)
    return messages, profile, RequestContext(channel="sms"), {"harmful": 0.2}


def measure(engine: PolicyEngine, n: int) -> dict[str, float]:
    messages, profile, context, scores = request()
    for _ in range(200):  # warm up
        engine.decide(messages, profile, context, scores)
    times, cpu = [], []
    for _ in range(n):
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        d = engine.decide(messages, profile, context, scores)
        cpu.append((time.thread_time_ns() - c0) / 1e6)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    times.sort()
    cpu.sort()
    return {
        "p50_ms": round(statistics.median(times), 4),
        "p99_ms": round(times[int(0.99 * (len(times) - 1))], 4),
        "mean_ms": round(statistics.fmean(times), 4),
        # CPU time of this thread: the engine's own cost, without preemption by other jobs
        "cpu_p50_ms": round(statistics.median(cpu), 4),
        "cpu_p99_ms": round(cpu[int(0.99 * (len(cpu) - 1))], 4),
        "matched_rules": len(d.matched),
        "interventions": len(d.plan.interventions),
        "samples": n,
    }


def main() -> None:
    rows = {}
    for n_rules, activation_every, samples in (
        (10, 0, 5000),
        (100, 0, 3000),
        (1000, 0, 1000),
        (100, 10, 3000),
    ):
        t0 = time.perf_counter()
        bundle = load_bundle_text(synthetic_bundle(n_rules, activation_every), "bench.yaml")
        load_ms = (time.perf_counter() - t0) * 1e3
        label = f"{n_rules}_rules" + ("_with_activation" if activation_every else "")
        rows[label] = {
            "rules": n_rules,
            "load_ms": round(load_ms, 1),
            **measure(PolicyEngine(bundle), samples),
        }
        r = rows[label]
        print(
            f"{label:>26}: p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
            f"cpu p99 {r['cpu_p99_ms']:.3f} ms  "
            f"(matched {r['matched_rules']}, load {r['load_ms']:.0f} ms)"
        )
    result = {
        "benchmark": "policy decision latency",
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "target": "p99 <= 1 ms at 100 rules",
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "results": rows,
    }
    out = Path(__file__).parent / "results" / "policy.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
