"""Oversight benchmark: server time of the dashboard's pages and the audit API over
1,000,000 records spread over 7 days, seeded through the real writer.

    python benchmarks/bench_oversight.py [--url redis://127.0.0.1:6379/0] [--records 1000000]
                                         [--days 7] [--repeats 60] [--keep PREFIX]

Server time is measured at the ASGI interface: from the request entering the app to the last
byte of its body, no network and no client in the way. Each page is timed beside the store
query it is built on, in the same run (the ratio is the cost of the page around its query).
Targets (p95): records page <= 50 ms, overview <= 150 ms, decision page <= 30 ms. The
background chain check is off while pages are timed (it reads every record: its duration is
reported on its own). Uses its own key prefix and deletes only its keys (unless --keep).
Writes benchmarks/results/oversight.json."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write
from steerguard.audit import AuditConfig, AuditLog, AuditStore
from steerguard.audit import log as audit_log
from steerguard.oversight import Oversight
from steerguard.oversight.access import SESSION_COOKIE
from steerguard.oversight.app import create_app
from steerguard.policy import BundleRef, Decision, Dropped, DropReason, Evidence, RuleMatch
from steerguard.runtime.plan import Intervention, SteeringPlan
from steerguard.runtime.report import InterventionReport, LayerMeasurement
from steerguard.runtime.result import GenerationResult
from steerguard.server.keys import KeyEntry, KeyRing, hash_key

TARGETS_MS = {"records_page": 50.0, "overview": 150.0, "decision_page": 30.0}
KEY = "sk-bench-" + "b" * 24
BUNDLE = BundleRef(name="support", revision="2026.11.1", content_hash="ab" * 32)
RULES = [("minor-safety", ("caution",)), ("distress-empathy", ("empathy",)),
         ("formal-preference", ("formal",)), ("casual-preference", ("casual",)),
         ("brevity-request", ("concise",)), ("harmful-refusal", ("refusal", "caution")),
         ("tool-failure-care", ("empathy", "calm")), ("terse-channel", ("concise",))]


def templates() -> list[tuple[Decision, GenerationResult]]:
    """Requests as the shipped policy makes them: one or two rules, one to three
    interventions of five layers each, measured."""
    out = []
    for k in range(len(RULES) * 2):
        picked = [RULES[k % len(RULES)]] + ([RULES[(k + 3) % len(RULES)]] if k % 2 else [])
        ivs = tuple(Intervention(vector=v, vector_hash=hashlib.sha256(v.encode()).hexdigest()[:16],
                                 layers=tuple(range(8 + j, 13 + j)), strength=0.04, source=rule)
                    for j, (rule, vectors) in enumerate(picked) for v in vectors)[:3]
        matched = tuple(RuleMatch(rule_id=rule, priority=90 - j, evidence=(
            Evidence(predicate="keywords", source="message[0].user", detail="matched",
                     quote="so stressed", span=(5, 16)),)) for j, (rule, _) in enumerate(picked))
        d = Decision(decision_id="t", bundle=BUNDLE, matched=matched,
                     dropped=(Dropped(rule_id="casual-preference", vector="casual",
                                      reason=DropReason.LOST_GROUP, detail="lost 'tone'"),),
                     plan=SteeringPlan(interventions=ivs), explanation="policy matched")
        reports = tuple(InterventionReport(
            index=i, intervention=iv, vector_hash=iv.vector_hash or "",
            coefficients={layer: 5.5 for layer in iv.layers},
            layers=tuple(LayerMeasurement(layer=layer, positions_affected=60, delta_norm=5.5,
                                          projection_before=-3.0 + layer,
                                          projection_after=2.0 + layer)
                         for layer in iv.layers)) for i, iv in enumerate(ivs))
        out.append((d, GenerationResult(text="an answer", token_ids=(1, 2, 3),
                                        prompt_tokens=60, finish_reason="stop",
                                        reports=reports, latency_s=0.8)))
    return out


class Clock:
    """The writer's clock while seeding: records land at chosen times over the past days."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def seed(config: AuditConfig, records: int, days: int) -> dict[str, Any]:
    tpl = templates()
    per_request = statistics.mean(1 + len(d.plan.interventions) for d, _ in tpl)
    n = int(records / per_request)
    end = time.time() - 60
    start = end - days * 86_400
    clock = Clock()
    audit_log.time = clock  # type: ignore[assignment]
    t0 = time.perf_counter()
    written = 0
    try:
        with AuditLog(config) as log:
            rng = random.Random(7)
            for i in range(n):
                clock.now = start + (end - start) * i / n
                d, result = tpl[i % len(tpl)]
                d = d.model_copy(update={"decision_id": f"d{i:08d}"})
                roll = rng.random()
                outcome: Any = ("completed" if roll < 0.97 else "cancelled" if roll < 0.985
                                else RuntimeError("generation failed"))
                ids = log.record(d, result, outcome, session_id=f"s{i // 12:06d}",
                                 user_id=f"u{(i // 12) % 5000:04d}", request_id=f"r{i}")
                written += len(ids)
            assert log.flush(600), log.counters
    finally:
        audit_log.time = time  # type: ignore[assignment]
    return {"requests": n, "records": written, "seconds": round(time.perf_counter() - t0, 1),
            "first": datetime.fromtimestamp(start, UTC).isoformat(),
            "last": datetime.fromtimestamp(end, UTC).isoformat()}


async def asgi_get(app: Any, path: str, cookie: str) -> tuple[int, float, int]:
    """(status, ms from entering the app to the body's last byte, body bytes)."""
    raw_path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": raw_path,
             "raw_path": raw_path.encode(), "query_string": query.encode(),
             "root_path": "", "headers": [(b"host", b"bench"), (b"cookie", cookie.encode()),
                                          (b"authorization", f"Bearer {KEY}".encode())],
             "client": ("10.0.0.2", 5000), "server": ("bench", 80)}
    status = 0
    size = 0
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    t = time.perf_counter()
    await app(scope, receive, send)
    ms = (time.perf_counter() - t) * 1000
    done.set()
    return status, ms, size


def summary(values: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(values, n=100, method="inclusive")
    # min: the cost when the request had the CPU to itself (on a shared machine the
    # percentiles carry the other tenants' load)
    return {"min": round(min(values), 2), "p50": round(statistics.median(values), 2),
            "p95": round(qs[94], 2), "max": round(max(values), 2), "n": len(values)}


def measure(app: Any, cookie: str, paths: Callable[[int], str], repeats: int,
            baseline: Callable[[int], Any] | None = None,
            noop: str | None = "/bench/noop") -> dict[str, Any]:
    """Each repeat times the page and then, in the same round, the store call under it and
    an empty endpoint of the same app (a sync route, so also a hop to the thread pool): on a
    busy machine the ratios say more than the milliseconds."""
    page_ms: list[float] = []
    base_ms: list[float] = []
    noop_ms: list[float] = []
    sizes: list[int] = []
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(asgi_get(app, paths(0), cookie))  # warm
        for i in range(repeats):
            status, ms, size = loop.run_until_complete(asgi_get(app, paths(i), cookie))
            assert status == 200, (paths(i), status)
            page_ms.append(ms)
            sizes.append(size)
            if baseline is not None:
                t = time.perf_counter()
                baseline(i)
                base_ms.append((time.perf_counter() - t) * 1000)
            if noop is not None:
                noop_ms.append(loop.run_until_complete(asgi_get(app, noop, cookie))[1])
    finally:
        loop.close()
    out: dict[str, Any] = {"server_ms": summary(page_ms), "bytes_p50": statistics.median(sizes),
                           "example": paths(0)}
    if base_ms:
        out["store_call_ms"] = summary(base_ms)
        out["ratio_p50_page_vs_store_call"] = round(
            statistics.median(page_ms) / max(statistics.median(base_ms), 1e-6), 2)
    if noop_ms:
        out["empty_endpoint_ms"] = summary(noop_ms)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--keep", default=None, help="reuse (or keep) the records under PREFIX")
    ap.add_argument("--verify", action="store_true", help="also time one whole-chain check")
    args = ap.parse_args()

    prefix = args.keep or "sgbenchov" + uuid.uuid4().hex[:8]
    home = Path("/tmp") / f"steerguard-bench-{prefix}"
    config = AuditConfig(redis_url=args.url, key_prefix=prefix, home=home, spill_fsync=False,
                         user_hmac_key="bench-hmac-key-" + "k" * 24, overflow="block",
                         block_timeout_s=60)
    client = redis.Redis.from_url(args.url)
    seeded: dict[str, Any]
    if args.keep and client.exists(f"{prefix}:days"):
        seeded = {"reused_prefix": prefix}
    else:
        seeded = seed(config, args.records, args.days)
        print(f"seeded {seeded}", flush=True)
    info = client.info("memory")
    store = AuditStore.from_config(config)
    ov = Oversight(store, keys=KeyRing([KeyEntry(name="bench", sha256=hash_key(KEY),
                                                 scopes=("audit:read",))]),
                   verify_interval_s=None)
    app = create_app(ov)

    @app.get("/bench/noop")
    def noop() -> dict[str, bool]:
        return {"ok": True}

    session = ov.access.sign_in(KEY)
    cookie = f"{SESSION_COOKIE}={session.token}"  # type: ignore[union-attr]
    rng = random.Random(11)
    days = store.days()
    n_req = int(seeded.get("requests") or 0) or _requests_in(store)
    pick = [rng.randrange(n_req) for _ in range(args.repeats + 1)]
    now = datetime.now(UTC)
    hour_ago = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
    sessions = [f"s{i // 12:06d}" for i in pick]
    users = [f"u{(i // 12) % 5000:04d}" for i in pick]
    results: dict[str, Any] = {}

    def run(name: str, paths: Callable[[int], str], base: Callable[[int], Any] | None,
            repeats: int | None = None) -> None:
        results[name] = r = measure(app, cookie, paths, repeats or args.repeats, base)
        print(f"{name}: {r['server_ms']} ratio {r.get('ratio_p50_page_vs_store_call')}",
              flush=True)

    since_1h = now - timedelta(hours=1)
    run("records_page", lambda i: "/dashboard/records", lambda i: store.tail(50))
    # Seeded history's stream ids are the seeding's write times, not the records' times, so
    # an unfiltered time-window scan of today reads the day from its start (in service the
    # two agree within the writer's lag): timed a few times, for what it is.
    run("records_page_last_hour_oldest_first", lambda i: f"/dashboard/records?since={hour_ago}",
        lambda i: store.query(since=since_1h, limit=50), repeats=5)
    run("records_page_by_session", lambda i: f"/dashboard/records?session={sessions[i]}"
        f"&since={(now - timedelta(days=args.days + 1)).strftime('%Y-%m-%dT%H:%M:%S')}",
        lambda i: store.query(session=sessions[i], since=now - timedelta(days=args.days + 1),
                              limit=50))
    run("records_page_by_user", lambda i: f"/dashboard/records?user={users[i]}&since={hour_ago}",
        lambda i: store.query(user=users[i], since=since_1h, limit=50))
    run("records_page_by_rule_7d", lambda i: "/dashboard/records?rule=formal-preference&since="
        f"{(now - timedelta(days=args.days)).strftime('%Y-%m-%dT%H:%M:%S')}",
        lambda i: store.query(rule="formal-preference", since=now - timedelta(days=args.days),
                              limit=50))
    run("overview", lambda i: "/dashboard/?range=24h",
        lambda i: store.stats(since=now - timedelta(hours=24), until=now, bucket="hour"))
    run("overview_7d", lambda i: "/dashboard/?range=7d",
        lambda i: store.stats(since=now - timedelta(hours=168), until=now, bucket="hour"))
    run("decision_page", lambda i: f"/dashboard/decisions/d{pick[i]:08d}",
        lambda i: store.query(decision=f"d{pick[i]:08d}", limit=1000))
    run("session_page", lambda i: f"/dashboard/session?id={sessions[i]}", None)
    run("api_records_by_session", lambda i: f"/v1/audit/records?limit=100&session={sessions[i]}",
        None)
    run("api_decision", lambda i: f"/v1/audit/decisions/d{pick[i]:08d}", None)
    run("api_stats_7d", lambda i: f"/v1/audit/stats?since="
        f"{(now - timedelta(days=args.days)).strftime('%Y-%m-%dT%H:%M:%S')}", None)

    verify: dict[str, Any] | None = None
    if args.verify:
        v = ov.service.check_now(full=True)
        step = ov.service.check_now(full=False)  # what the check does between full ones
        verify = {"state": v.state, "records": v.records, "full_seconds": v.seconds,
                  "incremental_state": step.state, "incremental_seconds": step.seconds}
        print(f"whole-chain check: {verify}", flush=True)
    checks = {name: {"p95_ms": results[key]["server_ms"]["p95"], "target_ms": target,
                     "met": results[key]["server_ms"]["p95"] <= target}
              for key, (name, target) in {"records_page": ("records_page", 50.0),
                                          "overview": ("overview", 150.0),
                                          "decision_page": ("decision_page", 30.0)}.items()}
    path = write("oversight", {
        "command": "python benchmarks/bench_oversight.py " + " ".join(sys.argv[1:]),
        "seeded": seeded, "days_present": len(days), "redis_used_memory": info["used_memory_human"],
        "targets": checks, "pages": results, "whole_chain_check": verify,
        "note": "server time at the ASGI interface; the background chain check was off; "
                "records_page_last_hour_oldest_first reads today's stream from its start "
                "because seeded stream ids are write times (see the script)",
    })
    print(f"wrote {path}")
    ov.close()
    if not args.keep:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for k in range(0, len(keys), 500):
            client.unlink(*keys[k:k + 500])
    client.close()


def _requests_in(store: AuditStore) -> int:
    total = store.stats(since=0, until=int(time.time() * 1000) + 1, bucket="day").total
    return total.decisions


if __name__ == "__main__":
    main()
