"""`steerguard serve` under 1, 4, 8 and 16 concurrent clients, side by side in one run with
the same requests one after another and with the engine's own `generate_batch` of those rows.

Each client has its own profile (so its own policy decision and plan); decoding is greedy,
so every mode produces the same tokens and throughput compares like with like. The server
runs as a subprocess (batching scheduler, Redis audit log under a key prefix of this run's,
deleted afterwards); the openai client streams, so time to first token is measured where the
user sees it. generate_batch runs in this process on the same prompts and plans, after the
server's turns, so the two never compete for the CPU.

    python benchmarks/bench_serve.py [--clients 1,4,8,16] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/0"
MODEL = "smollm2-135m"
QUESTIONS = [
    "Hello, where is my order A-1234?",
    "How do I reset my password?",
    "I'm so stressed, my parcel never came.",
    "Can I change the delivery address?",
]


def profiles(n: int) -> list[dict[str, Any]]:
    bands = ["adult", "minor", "senior", "adult"]
    registers = ["formal", "neutral", "casual", "formal"]
    out = []
    for k in range(n):
        out.append({"user_id": f"bench-{k}", "age_band": bands[k % 4],
                    "preferences": {"register": registers[(k // 4) % 4]}})
    return out


def rows(n: int) -> list[tuple[str, dict[str, Any]]]:
    return [(QUESTIONS[k % len(QUESTIONS)], p) for k, p in enumerate(profiles(n))]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# the server -------------------------------------------------------------------------------


def start_server(prefix: str, max_batch: int) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "STEERGUARD_REDIS_URL": REDIS_URL, "STEERGUARD_AUDIT_PREFIX": prefix,
           "PYTHONPATH": str(ROOT)}
    config = Path(f"/tmp/bench-serve-{prefix}.yaml")
    config.write_text(f"server:\n  max_batch: {max_batch}\n  max_queue: 64\n")
    process = subprocess.Popen(
        [sys.executable, "-c", "from steerguard.cli.app import main; main()", "serve",
         "--port", "0", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if "serving on" not in line:
        process.kill()
        raise SystemExit(f"server did not start: {line!r}")
    url = line.strip().rsplit(" ", 1)[-1]
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("server never became healthy")


async def one(client: Any, question: str, profile: dict[str, Any], max_tokens: int
              ) -> dict[str, float]:
    started = time.perf_counter()
    first = None
    tokens = 0
    text = ""
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=max_tokens,
        stream=True, stream_options={"include_usage": True},
        extra_body={"steerguard": {"profile": profile}})
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - started
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    latency = time.perf_counter() - started
    return {"latency_s": latency, "ttft_s": first if first is not None else latency,
            "tokens": tokens, "text": text}


async def concurrent(url: str, batch: list[tuple[str, dict[str, Any]]], max_tokens: int
                     ) -> dict[str, Any]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=900)
    started = time.perf_counter()
    results = await asyncio.gather(*[one(client, q, p, max_tokens) for q, p in batch])
    wall = time.perf_counter() - started
    await client.close()
    return summarize(results, wall)


async def sequential(url: str, batch: list[tuple[str, dict[str, Any]]], max_tokens: int
                     ) -> dict[str, Any]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=900)
    started = time.perf_counter()
    results = [await one(client, q, p, max_tokens) for q, p in batch]
    wall = time.perf_counter() - started
    await client.close()
    return summarize(results, wall)


def summarize(results: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    tokens = sum(int(r["tokens"]) for r in results)
    lat = [r["latency_s"] for r in results]
    ttft = [r["ttft_s"] for r in results]
    return {
        "wall_s": round(wall, 3), "output_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 2),
        "latency_p50_s": round(statistics.median(lat), 3),
        "latency_p95_s": round(pct(lat, 0.95), 3),
        "ttft_p50_s": round(statistics.median(ttft), 3), "ttft_p95_s": round(pct(ttft, 0.95), 3),
        "texts": [r["text"] for r in results],
    }


# the engine's own batch -----------------------------------------------------------------


def engine_batch(batch: list[tuple[str, dict[str, Any]]], max_tokens: int, root: Any
                 ) -> dict[str, Any]:
    from langchain_core.messages import HumanMessage

    from steerguard.chat.call import RequestIdentity, prepare_call
    from steerguard.policy.inputs import UserProfile
    from steerguard.runtime.engine import GenerationParams

    pipe = root.pipeline()
    params = GenerationParams(max_new_tokens=max_tokens)
    calls = [prepare_call(pipe, root.grammar(), [HumanMessage(q)], params, model_name=MODEL,
                          identity=RequestIdentity(UserProfile.model_validate(p)))
             for q, p in batch]
    planned = [pipe.plan(c.request) for c in calls]
    started = time.perf_counter()
    results = pipe.engine.generate_batch(
        [c.request.prompt for c in calls], [pl.plan for pl in planned], params,
        probes=planned[0].runtime_probes, probe_offsets=[c.request.probe_offset for c in calls])
    wall = time.perf_counter() - started
    tokens = sum(r.completion_tokens for r in results)
    return {"wall_s": round(wall, 3), "output_tokens": tokens,
            "tokens_per_s": round(tokens / wall, 2), "texts": [r.text for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="1,4,8,16")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2,
                        help="server and generate_batch turns, interleaved, per client count")
    parser.add_argument("--no-sequential", action="store_true")
    args = parser.parse_args()
    counts = [int(x) for x in args.clients.split(",")]
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    prefix = "sgbench" + uuid.uuid4().hex[:8]
    process, url = start_server(prefix, max(counts))

    from steerguard.config import SteerguardConfig
    from steerguard.root import Steerguard

    table: dict[str, Any] = {}
    root = Steerguard(SteerguardConfig.load(), audit=False)
    try:
        asyncio.run(concurrent(url, rows(2), 4))  # warm-up: first-call costs
        engine_batch(rows(2), 4, root)
        for n in counts:
            batch = rows(n)
            # Interleaved turns: a shared machine's load drifts; each ratio compares turns
            # run back to back, and the median of the ratios is reported.
            turns = []
            for _ in range(args.repeats):
                shared = asyncio.run(concurrent(url, batch, args.max_tokens))
                own = engine_batch(batch, args.max_tokens, root)
                turns.append((shared, own))
            shared, own = min(turns, key=lambda t: t[0]["wall_s"])
            row: dict[str, Any] = {"server_concurrent": shared, "generate_batch": own}
            row["server_vs_generate_batch"] = round(statistics.median(
                s["tokens_per_s"] / o["tokens_per_s"] for s, o in turns), 3)
            row["ratios"] = [round(s["tokens_per_s"] / o["tokens_per_s"], 3) for s, o in turns]
            same = all(s["texts"] == o["texts"] for s, o in turns)
            if not args.no_sequential:
                alone = asyncio.run(sequential(url, batch, args.max_tokens))
                row["server_sequential"] = alone
                row["server_vs_sequential"] = round(
                    shared["tokens_per_s"] / alone["tokens_per_s"], 3)
                same = same and alone["texts"] == shared["texts"]
            row["same_tokens"] = same
            table[str(n)] = row
            print(f"{n:>2} clients: server {shared['tokens_per_s']:.1f} tok/s, generate_batch "
                  f"{own['tokens_per_s']:.1f} tok/s, ratios {row['ratios']}, TTFT p95 "
                  f"{shared['ttft_p95_s']:.2f} s", flush=True)
    finally:
        root.close()
        process.terminate()
        process.wait(60)
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.unlink(*keys)
    for row in table.values():
        for mode in ("server_concurrent", "server_sequential", "generate_batch"):
            if mode in row:
                row[mode].pop("texts")

    print(f"\n{'clients':>7} {'server tok/s':>12} {'sequential':>10} {'gen_batch':>9} "
          f"{'vs batch':>8} {'vs seq':>6} {'p50 lat':>7} {'p95 lat':>7} {'p50 TTFT':>8} "
          f"{'p95 TTFT':>8} same")
    for n, row in table.items():
        s = row["server_concurrent"]
        seq = row.get("server_sequential", {}).get("tokens_per_s", float("nan"))
        print(f"{n:>7} {s['tokens_per_s']:>12.1f} {seq:>10.1f}"
              f" {row['generate_batch']['tokens_per_s']:>9.1f} "
              f"{row['server_vs_generate_batch']:>8.2f} "
              f"{row.get('server_vs_sequential', float('nan')):>6.2f} "
              f"{s['latency_p50_s']:>7.2f} {s['latency_p95_s']:>7.2f} {s['ttft_p50_s']:>8.2f} "
              f"{s['ttft_p95_s']:>8.2f} {row['same_tokens']}")
    path = write("serve", {"max_tokens": args.max_tokens, "repeats": args.repeats,
                           "clients": table,
                           "goal": "server >= 0.85x generate_batch at 8 and 16 clients; "
                                   "p95 TTFT < 1 s at 8"})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
