"""SIGKILL the server in the middle of a stream of records, restart it: every record is
present exactly once, in order, and the chain verifies."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from steerguard.audit import AuditConfig, AuditLog, AuditStore

from . import factories as f
from .conftest import OwnServer


def test_sigkill_and_restart_loses_and_duplicates_nothing(own_server: OwnServer,
                                                          tmp_path: Path) -> None:
    cfg = AuditConfig(redis_url=own_server.url, key_prefix="sg", home=tmp_path,
                      retry_initial_s=0.02, retry_max_s=0.1, socket_timeout_s=0.5,
                      spill_fsync=False, batch_size=16)
    log = AuditLog(cfg)
    ids: list[str] = []
    done = threading.Event()

    def produce() -> None:
        for i in range(400):
            d = f.decision(i)
            ids.extend(log.record(d, f.result(d), user_id=f"user-{i % 7}", session_id="s"))
            time.sleep(0.001)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.15)
    own_server.kill()
    time.sleep(0.3)  # records keep coming: they go to the spill file
    spilled_during_outage = log.counters.spilled
    own_server.start()  # same port, same AOF directory
    producer.join()
    assert log.flush(20), log.counters
    counters = log.close()

    assert spilled_during_outage > 0 and counters.replayed > 0
    assert counters.dropped == 0 and counters.queued == len(ids) == 1200
    store = AuditStore(own_server.client(), cfg)
    stored = [r.record_id for r in store.iter_records()]
    assert stored == ids  # exactly once, in order
    report = store.verify()
    assert report.ok and report.records == len(ids), report.first
    assert log.spill_path.stat().st_size == 0
