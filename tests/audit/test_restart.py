"""SIGKILL the server in the middle of a stream of records, restart it: every record is
present exactly once, in order, and the chain verifies. Also when the server comes back
without records it had acknowledged (recent.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from steerguard.audit import AuditConfig, AuditLog, AuditStore
from steerguard.audit.local_cluster import wait_until

from . import factories as f
from .conftest import OwnServer


def test_sigkill_and_restart_loses_and_duplicates_nothing(own_server: OwnServer,
                                                          tmp_path: Path) -> None:
    cfg = AuditConfig(redis_url=own_server.url, key_prefix="sg", home=tmp_path,
                      retry_initial_s=0.02, retry_max_s=0.1, socket_timeout_s=0.5,
                      spill_fsync=False, batch_size=16)
    log = AuditLog(cfg)
    ids: list[str] = []
    halfway, back = threading.Event(), threading.Event()

    def produce() -> None:
        for i in range(400):
            d = f.decision(i)
            ids.extend(log.record(d, f.result(d), user_id=f"user-{i % 7}", session_id="s"))
            if i == 100:
                halfway.set()
            if i == 300:  # the last hundred arrive once the server is back
                assert back.wait(30)
            time.sleep(0.001)

    producer = threading.Thread(target=produce)
    producer.start()
    assert halfway.wait(30)
    own_server.kill()
    # records keep coming: they go to the spill file
    wait_until(lambda: log.counters.spilled > 0, "records to spill", timeout=30)
    own_server.start()  # same socket, same AOF directory
    back.set()
    producer.join()
    assert log.flush(20), log.counters
    counters = log.close()

    assert counters.spilled > 0 and counters.replayed > 0
    assert counters.dropped == 0 and counters.queued == len(ids) == 1200
    assert counters.lost_by_server == 0
    store = AuditStore(own_server.client(), cfg)
    stored = [r.record_id for r in store.iter_records()]
    assert stored == ids  # exactly once, in order
    report = store.verify()
    assert report.ok and report.records == len(ids), report.first
    assert log.spill_path.stat().st_size == 0


def _config(server: OwnServer, home: Path, **kw: object) -> AuditConfig:
    return AuditConfig(redis_url=server.url, key_prefix="sg", home=home, retry_initial_s=0.02,
                       retry_max_s=0.1, socket_timeout_s=0.5, spill_fsync=False, batch_size=16,
                       **kw)  # type: ignore[arg-type]


def _produce(log: AuditLog, start: int, n: int) -> list[str]:
    ids: list[str] = []
    for i in range(start, start + n):
        d = f.decision(i)
        ids.extend(log.record(d, f.result(d), user_id=f"user-{i % 7}", session_id="s"))
    assert log.flush(10), log.counters
    return ids


def _lose_since(server: OwnServer, snapshot: Path, cfg: AuditConfig, written: int) -> int:
    """Kill the server and bring it back as it was at `snapshot`: it has lost what it
    acknowledged since (as a postponed AOF write does, or a server without persistence).
    Returns how many of the `written` records it lost: a snapshot may itself lack the last
    writes before it, when the server postponed its AOF write (the very case modelled)."""
    server.kill()
    server.restore(snapshot)
    server.start()
    held = len(list(AuditStore(server.client(), cfg).iter_records()))
    assert held < written  # the loss is real
    return written - held


def test_records_the_server_lost_after_acknowledging_are_written_again(
        own_server: OwnServer, tmp_path: Path) -> None:
    cfg = _config(own_server, tmp_path / "home")
    log = AuditLog(cfg)
    ids = _produce(log, 0, 20)
    own_server.snapshot(tmp_path / "snap")
    ids += _produce(log, 20, 20)  # 60 records (at least) the server will lose
    lost = _lose_since(own_server, tmp_path / "snap", cfg, len(ids))

    ids += _produce(log, 40, 20)  # the next write finds the head behind and repairs it
    counters = log.close()
    assert counters.rewritten == lost >= 60 and counters.lost_by_server == 0
    store = AuditStore(own_server.client(), cfg)
    assert [r.record_id for r in store.iter_records()] == ids
    report = store.verify()
    assert report.ok and report.records == 180, report.first


def test_a_loss_while_the_writer_is_idle_is_repaired_at_close(own_server: OwnServer,
                                                                tmp_path: Path) -> None:
    """The server comes back empty, without even the list of days; the client reconnects
    without an error the writer would see."""
    cfg = _config(own_server, tmp_path / "home")
    log = AuditLog(cfg)
    own_server.snapshot(tmp_path / "snap")
    ids = _produce(log, 0, 20)
    lost = _lose_since(own_server, tmp_path / "snap", cfg, len(ids))  # nothing written after
    assert lost == 60

    counters = log.close()
    assert counters.rewritten == 60 and counters.lost_by_server == 0
    assert counters.write_errors == 0
    store = AuditStore(own_server.client(), cfg)
    assert [r.record_id for r in store.iter_records()] == ids  # found through the days list
    assert store.verify().ok


def test_records_lost_beyond_the_window_are_counted_and_verify_reports_them(
        own_server: OwnServer, tmp_path: Path) -> None:
    cfg = _config(own_server, tmp_path / "home", rewrite_window_records=40)
    log = AuditLog(cfg)
    ids = _produce(log, 0, 10)
    own_server.snapshot(tmp_path / "snap")
    ids += _produce(log, 10, 30)  # 90 (at least) to lose; at most 40 are still kept
    lost = _lose_since(own_server, tmp_path / "snap", cfg, len(ids))

    ids += _produce(log, 40, 10)  # writing goes on after the gap
    counters = log.close()
    assert counters.lost_by_server >= lost - 40 > 0
    assert counters.lost_by_server + counters.rewritten == lost
    store = AuditStore(own_server.client(), cfg)
    stored = [r.record_id for r in store.iter_records()]
    assert len(stored) == len(ids) - counters.lost_by_server
    held = 120 - lost
    assert stored[:held] == ids[:held] and stored[-30:] == ids[-30:]
    report = store.verify()
    assert not report.ok  # the chain tells that records are missing
