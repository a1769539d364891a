from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from steerguard.audit import AuditConfig, AuditLog, AuditStore, AuditUnavailableError
from steerguard.audit.keys import KeySpace, day_of, day_start_ms
from steerguard.audit.sink import RedisSink

from . import factories as f


def _fill(log: AuditLog, n: int, **kw) -> list[list[str]]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(n):
        d = f.decision(i, rule="minor-calm" if i % 2 else "adult-formal")
        out.append(log.record(d, f.result(d), request_id=f"req-{i}", session_id=f"s-{i % 3}",
                              user_id="alice" if i < n - 2 else "bob", **kw))
    return out


def test_query_paging_filters_and_stats(config: AuditConfig) -> None:
    with AuditLog(config, model=f.MODEL) as log:
        t0 = int(time.time() * 1000)
        ids = _fill(log, 12)
        assert log.flush(5)
        assert log.counters.written == log.counters.queued == 36
    store = AuditStore(redis.Redis.from_url(config.redis_url), config)

    seen, cursor = [], None
    while True:  # user + time range, paged 5 at a time, oldest first, no repeats
        page = store.query(user="alice", since=t0 - 1000, limit=5, cursor=cursor)
        seen += [r.record_id for r in page.records]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == [i for group in ids[:10] for i in group]

    by_decision = store.query(decision=f.decision(3).decision_id).records
    assert [r.kind for r in by_decision] == ["decision", "intervention", "intervention"]
    first = store.query(decision=f.decision(3).decision_id, limit=2)
    rest = store.query(decision=f.decision(3).decision_id, cursor=first.cursor)
    assert [r.record_id for r in first.records + rest.records] == ids[3]
    calm_minor = store.query(vector="calm", rule="minor-calm", kind="intervention").records
    assert len(calm_minor) == 6 and {r.vector for r in calm_minor} == {"calm"}
    assert len(store.query(session="s-1", user="bob").records) == 3
    assert store.query(outcome="error").records == []
    # the common outcome has no index (it would list every record): the streams answer it
    assert not shared_keys(config, "*:o:completed")
    assert len(store.query(outcome="completed", limit=1000).records) == 36
    assert len(store.query(outcome="completed", user="bob").records) == 6
    assert store.query(user="alice", until=t0 - 1).records == []
    assert len(store.query(limit=1000).records) == 36  # no index: the streams

    stats = store.stats()
    assert stats.total.decisions == 12 and stats.total.interventions == 24
    assert stats.total.vectors == {"calm": 12, "formal": 12}
    assert stats.total.rules == {"minor-calm": 6, "adult-formal": 6}
    assert stats.total.outcomes == {"completed": 12}
    assert [r.record_id for _, r in store.tail(3)] == ids[-1]
    assert store.verify().ok


def shared_keys(config: AuditConfig, pattern: str) -> list[bytes]:
    client = redis.Redis.from_url(config.redis_url)
    return list(client.scan_iter(match=f"{config.key_prefix}:{pattern}"))


def test_a_decision_split_over_two_batches_keeps_all_its_records(config: AuditConfig) -> None:
    """The write path that splits runs (replay, cluster) may cut a request in two: the
    decision hash appends the second part's ids instead of replacing the first."""
    log = AuditLog(config, start=False)
    ids = [log.record(d, f.result(d)) for d in (f.decision(1), f.decision(2))]
    log._writer._seal_queued()
    client = redis.Redis.from_url(config.redis_url)
    sink = RedisSink(client, KeySpace(config.key_prefix), batch_size=2)
    assert sink.write(log._writer.pending) == 6  # runs of 2: both requests cut in two
    log._writer.pending = []
    store = AuditStore(client, config)
    for d, want in zip((f.decision(1), f.decision(2)), ids, strict=True):
        assert [r.record_id for r in store.query(decision=d.decision_id).records] == want
    assert store.verify().ok
    log.close()


def test_days_written_with_a_sorted_set_per_decision_still_answer(config: AuditConfig) -> None:
    """Before decision hashes, `P:{D}:d:<decision>` held the decision's stream ids."""
    with AuditLog(config) as log:
        ids = log.record(f.decision(4), f.result(f.decision(4)))
        assert log.flush(5)
    client = redis.Redis.from_url(config.redis_url)
    store = AuditStore(client, config)
    day = store.days()[0]
    keys = store.keys
    client.delete(keys.decisions(day))  # this test's own prefix
    members = {}
    for sid, _ in client.xrange(keys.stream(day)):
        ms, _, seq = sid.decode().partition("-")
        members[f"{ms}-{int(seq):06d}"] = int(ms)
    client.zadd(keys.tag(day) + "d:" + f.decision(4).decision_id, members)
    found = store.query(decision=f.decision(4).decision_id).records
    assert [r.record_id for r in found] == ids


def test_queries_over_a_few_days_skip_missing_days(config: AuditConfig) -> None:
    """A range of up to three days is read day by day without listing the days present; a
    day with no records reads as empty, and a longer range lists the days first."""
    now = int(time.time() * 1000)
    today = day_start_ms(day_of(now))
    two_days_ago = today - 2 * 86_400_000 + 3_600_000
    log = AuditLog(config, start=False)
    ids = [log.record(d, f.result(d), user_id="alice") for d in map(f.decision, range(3))]
    for item, ts in zip(log._writer.queue, (two_days_ago, two_days_ago + 1, now), strict=True):
        item.ts = ts  # two requests two days ago, none yesterday, one today
    log._writer.start()
    assert log.flush(5)
    log.close()
    store = AuditStore(redis.Redis.from_url(config.redis_url), config)
    assert len(store.days()) == 2
    every = [i for group in ids for i in group]

    def found(**kw) -> list[str]:  # type: ignore[no-untyped-def]
        return [r.record_id for r in store.query(user="alice", limit=4, **kw).records]

    assert found(since=today - 9 * 86_400_000) == every[:4]  # ten days: listed first
    listed = store.days
    store.days = lambda: pytest.fail("a query of three days listed the days")  # type: ignore
    assert found(since=two_days_ago - 1, until=now) == every[:4]
    page = store.query(user="alice", since=two_days_ago - 1, until=now, limit=4)
    rest = store.query(user="alice", since=two_days_ago - 1, until=now, cursor=page.cursor)
    assert [r.record_id for r in rest.records] == every[4:]
    assert found(since=two_days_ago - 1, until=today - 1) == every[:4]
    assert found(since=today - 86_400_000, until=now) == every[6:]
    store.days = listed  # type: ignore[method-assign]


def test_error_and_cancelled_outcomes(config: AuditConfig) -> None:
    with AuditLog(config) as log:
        d = f.decision(1)
        log.record(d, None, ValueError("bad logits"), user_id="u")
        log.record(f.decision(2), None, "cancelled", user_id="u")
        assert log.flush(5)
    store = AuditStore(redis.Redis.from_url(config.redis_url), config)
    errs = store.query(outcome="error", kind="decision").records
    assert [e.outcome.error_type for e in errs] == ["ValueError"]
    assert store.stats(bucket="day").total.outcomes == {"error": 1, "cancelled": 1}


def test_empty_plan_still_gets_a_decision_record(config: AuditConfig) -> None:
    from steerguard.policy.decision import Decision

    with AuditLog(config) as log:
        ids = log.record(Decision(decision_id="nothing", bundle=f.BUNDLE), None)
        assert len(ids) == 1 and log.flush(5)
    rec = AuditStore(redis.Redis.from_url(config.redis_url), config).query(
        decision="nothing").records
    assert [r.record_id for r in rec] == ids


def _stalled(config: AuditConfig, **kw) -> AuditLog:  # type: ignore[no-untyped-def]
    cfg = config.model_copy(update={"max_queue": 2, **kw})
    return AuditLog(cfg, start=False)  # writer not running: the queue stays full


def test_overflow_refuse_raises_a_clear_error(config: AuditConfig) -> None:
    log = _stalled(config, overflow="refuse")
    log.record(f.decision(0))
    log.record(f.decision(1))
    with pytest.raises(AuditUnavailableError, match=r"queue full.*max_queue=2.*'refuse'"):
        log.record(f.decision(2))
    with pytest.raises(AuditUnavailableError):
        log.check_available()
    assert log.counters.refused == 1


def test_overflow_block_waits_then_raises(config: AuditConfig) -> None:
    log = _stalled(config, overflow="block", block_timeout_s=0.2)
    log.record(f.decision(0))
    log.record(f.decision(1))
    with pytest.raises(AuditUnavailableError, match="'block'"):
        log.record(f.decision(2))
    assert log.counters.refused == 1


def test_overflow_block_lets_a_record_in_once_the_queue_drains(config: AuditConfig) -> None:
    log = _stalled(config, overflow="block", block_timeout_s=60)
    log.record(f.decision(0))
    log.record(f.decision(1))
    ids: list[str] = []
    waiting = threading.Thread(target=lambda: ids.extend(log.record(f.decision(2))))
    waiting.start()
    log._writer.start()  # drains the queue: the record gets in, long before the timeout
    waiting.join(60)
    assert ids and log.counters.refused == 0
    assert log.flush(10)
    log.close()


def test_overflow_buffer_drops_and_counts(config: AuditConfig) -> None:
    log = _stalled(config, overflow="buffer")
    for i in range(3):
        log.record(f.decision(i))
    assert log.counters.dropped_overflow == 3 and log.counters.queued == 6


def test_closed_log_refuses(config: AuditConfig) -> None:
    log = AuditLog(config)
    log.close()
    with pytest.raises(AuditUnavailableError, match="closed"):
        log.record(f.decision(0))


def test_a_log_nobody_closed_flushes_at_interpreter_exit(config: AuditConfig) -> None:
    """The chat model's default log is never closed by the application: records queued when
    the process ends are still written (atexit), not lost with the daemon writer thread."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        from pathlib import Path
        from steerguard.audit import AuditConfig, AuditLog
        from tests.audit import factories as f
        cfg = AuditConfig(redis_url={config.redis_url!r}, key_prefix={config.key_prefix!r},
                          home=Path({str(config.home)!r}))
        log = AuditLog(cfg)
        for i in range(200):
            d = f.decision(i)
            log.record(d, f.result(d), user_id="exit-user", session_id="exit")
        print(log.counters.queued)
    """)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    queued = int(done.stdout.strip().splitlines()[-1])
    store = AuditStore(redis.Redis.from_url(config.redis_url), config)
    records = store.query(session="exit", limit=1000).records
    assert queued > 200 and len(records) == queued
    assert store.verify(config.home / "none").ok


def test_a_reader_without_the_writers_key_is_told_so(config: AuditConfig, tmp_path: Path) -> None:
    """A key of its own would make every query by user come back empty, silently."""
    from steerguard.audit.errors import AuditConfigError

    reader_config = config.model_copy(update={"home": tmp_path / "elsewhere"})
    store = AuditStore(redis.Redis.from_url(config.redis_url), reader_config)
    with pytest.raises(AuditConfigError, match=r"hmac\.key does not exist"):
        store.query(user="alice")
    assert not (tmp_path / "elsewhere" / "audit" / "hmac.key").exists()


def _key_when_all_start(barrier: Any, config: AuditConfig, out: Any) -> None:
    from steerguard.audit.log import hmac_key

    barrier.wait()
    try:
        out.put(hmac_key(config).decode())
    except Exception as exc:
        out.put(f"{type(exc).__name__}: {exc}")


def test_workers_starting_together_share_one_user_key(tmp_path: Path) -> None:
    """Each worker process of a service makes the key if it is missing: they must all end
    up with the same one, and none may read it half-written or fail on the others' file."""
    import multiprocessing

    config = AuditConfig(home=tmp_path, redis_url="redis://127.0.0.1:1/0")
    # fork: a spawned child would import all of steerguard (seconds each); the child only
    # makes a file and puts a string on a queue
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(8), ctx.Queue()
    workers = [ctx.Process(target=_key_when_all_start, args=(barrier, config, out))
               for _ in range(8)]
    for w in workers:
        w.start()
    keys = [out.get(timeout=30) for _ in workers]
    for w in workers:
        w.join(10)
    assert len(set(keys)) == 1 and len(keys[0]) == 64, keys
    assert sorted(p.name for p in (tmp_path / "audit").iterdir()) == ["hmac.key"]
    assert (tmp_path / "audit" / "hmac.key").stat().st_mode & 0o777 == 0o600


def test_a_forked_worker_writes_its_own_chain(config: AuditConfig) -> None:
    """A pre-forking server builds the app (and its log) and then forks workers: each child
    gets a writer and a chain of its own; the parent's queue stays the parent's."""
    log = AuditLog(config)
    ids = log.record(f.decision(0), None, user_id="parent", session_id="fork")
    assert log.flush(5)
    queued_at_fork = log.record(f.decision(1), None, user_id="parent", session_id="fork")
    pid = os.fork()
    if pid == 0:  # the worker: exit status 0 only if its records reached Redis
        ok = False
        try:
            idle = not log._writer.started  # no thread until the child records
            mine = [log.record(f.decision(i), None, user_id="child", session_id="fork")
                    for i in range(2, 5)]
            ok = (idle and log.chain_id.split("-")[1] == str(os.getpid()) and log.flush(10)
                  and log.counters.written == 9 and all(mine))
            log.close()
        finally:
            os._exit(0 if ok else 1)
    try:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        ids += queued_at_fork
        assert log.flush(5)
    finally:
        log.close()  # before the prefix's keys are deleted, even when failing

    store = AuditStore(redis.Redis.from_url(config.redis_url), config)
    records = store.query(session="fork", limit=100).records
    chains = {r.chain for r in records}
    assert len(records) == 15 and len(chains) == 2  # 2 requests + 3 of the child's, 3 each
    assert [r.record_id for r in records if r.chain == log.chain_id] == ids
    report = store.verify()
    assert report.ok and report.records == 15, report.first
    assert log.counters.rewritten == 0
