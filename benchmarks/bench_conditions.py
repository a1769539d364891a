"""Cost of activation conditions as a share of the prefill they ride on (target <= 5%).

    python benchmarks/bench_conditions.py [--repeats 30]

For each prompt and user the shipped support bundle is run two ways, alternating inside every
repeat:
  with conditions  pipeline.plan + pipeline.generate: the engine reads the probes mid-prefill
                   (distress at layer 6, harmful_request at layers 14-26), the policy decides
                   from their scores and the plan is installed for the layers after;
  decided before   the same final plan, known up front, handed straight to the engine.
Both generate one token, so the time is the prefill (and one token choice). The ratio is the
median of per-repeat ratios. Prompts: a short chat turn and an agent turn with a tool-list
system prompt (a few hundred tokens). Users: one no rule steers (the probes only read), and one
who prefers formal language: `formal` steers all positions at layers 12-16, below the last
probe layer, so the prompt runs a second time, steered (the price of reading layer 26). For
that user the cost is also given as a share of a whole request answering 48 tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median_ratio, write
from steerguard.cli.common import load_engine, open_root
from steerguard.pipeline import Request, SteeringPipeline
from steerguard.policy import ChatMessage, RequestContext, UserProfile
from steerguard.policy.activation import load_condition_data
from steerguard.resources import concepts_dir, conditions_dir, default_bundle_path
from steerguard.runtime.engine import GenerationParams

CONCEPTS = concepts_dir()
PROMPTS = {
    "chat turn": [
        {"role": "system", "content": "You are a support agent for an online shop."},
        {"role": "user", "content": "Hey, where is my order? It was due yesterday."},
    ],
}


def agent_prompt() -> list[dict[str, str]]:
    # The calibration context with a tool list: a realistic agent system prompt.
    data = load_condition_data(conditions_dir() / "distress")
    system = next(c for c in data.contexts if c and "<tools>" in c)
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": "Please cancel my subscription, customer id c-881."},
    ]


USERS = {
    "no steering": UserProfile(user_id="bench", age_band="adult"),
    "formal user": UserProfile(user_id="bench", age_band="adult",
                               preferences={"register": "formal"}),
}


def measure(
    pipeline: SteeringPipeline,
    messages: list[dict[str, str]],
    profile: UserProfile,
    params: GenerationParams,
    repeats: int,
) -> dict[str, object]:
    engine = pipeline.engine
    request = Request(
        messages=tuple(ChatMessage(**m) for m in messages),
        prompt=messages,
        profile=profile,
        context=RequestContext(channel="chat"),
    )
    planned = pipeline.plan(request)
    pipeline.generate(request, planned, params)
    assert planned.decision is not None
    final_plan = planned.decision.plan

    def with_conditions() -> None:
        pipeline.generate(request, pipeline.plan(request), params)

    def decided_before() -> None:
        engine.generate(messages, final_plan, params)

    for fn in (with_conditions, decided_before):  # warm up
        fn()
    pairs = []
    for _ in range(repeats):
        times = []
        for fn in (with_conditions, decided_before):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        pairs.append((times[0], times[1]))
    prefill_ms = sorted(b for _, b in pairs)[len(pairs) // 2] * 1000
    return {
        "prompt_tokens": len(engine.encode(messages)),
        "prefill_ms_median": round(prefill_ms, 2),
        "added_share": round(median_ratio(pairs) - 1.0, 4),
        "vectors_in_plan": [iv.vector for iv in final_plan.interventions],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    sg = open_root("smollm2-135m", concepts=CONCEPTS, bundle=default_bundle_path(), audit=False)
    load_engine(sg)
    pipeline = sg.pipeline()
    params = GenerationParams(max_new_tokens=1)
    prompts = {**PROMPTS, "agent turn": agent_prompt()}
    results: dict[str, object] = {}
    for label, messages in prompts.items():
        for user, profile in USERS.items():
            results[f"{label}, {user}"] = measure(pipeline, messages, profile, params,
                                                  args.repeats)
        whole = GenerationParams(max_new_tokens=48, stop=())
        row = measure(pipeline, messages, USERS["formal user"], whole, max(3, args.repeats // 3))
        results[f"{label}, formal user, whole request (48 tokens)"] = row
    payload = {
        "command": "python benchmarks/bench_conditions.py " + " ".join(sys.argv[1:]),
        "repeats": args.repeats,
        "conditions": sorted(sg.probes.for_policy(sg.policy, sg.engine())),
        "results": results,
        "target_added_share": 0.05,
    }
    path = write("conditions", payload)
    print(json.dumps(payload, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
