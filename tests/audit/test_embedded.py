from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from steerguard.audit import AuditConfig, AuditLog, AuditStore

from . import factories as f


def test_embedded_valkey_with_aof_survives_a_restart(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEERGUARD_REDIS_URL", raising=False)
    cfg = AuditConfig(home=tmp_path)
    with AuditLog(cfg) as log:
        ids = log.record(f.decision(1), None, user_id="alice")
        assert log.flush(5)
    assert (cfg.embedded_dir / "appendonlydir").exists()
    store = AuditStore.from_config(cfg)  # starts the server again from its AOF
    try:
        assert [r.record_id for r in store.query(user="alice").records] == ids
        assert store.verify().ok
    finally:
        store.close()


def test_a_process_sharing_the_server_starts_it_again(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes share the embedded server; the one that started it stops it when it
    exits. The others' writers start it again (from its AOF) instead of spilling forever."""
    monkeypatch.delenv("STEERGUARD_REDIS_URL", raising=False)
    cfg = AuditConfig(home=tmp_path, retry_initial_s=0.02, retry_max_s=0.1,
                      spill_fsync=False)
    first = AuditLog(cfg)  # starts the server
    ids = first.record(f.decision(1), None, user_id="alice")
    assert first.flush(5)
    other = AuditLog(cfg)  # shares it
    assert other._embedded is not None and other._embedded._server is None
    first.close()  # stops it
    for i in range(2, 6):
        ids += other.record(f.decision(i), None, user_id="alice")
    assert other.flush(15), other.counters
    assert other._embedded._server is not None  # it owns the server now
    counters = other.close()
    assert counters.dropped == 0
    store = AuditStore.from_config(cfg)
    try:
        assert [r.record_id for r in store.query(user="alice").records] == ids
        assert store.verify().ok
    finally:
        store.close()


PREFORK = """
import os, sys
from steerguard.audit import AuditConfig, AuditLog
from tests.audit import factories as f

log = AuditLog(AuditConfig(home=sys.argv[1]))  # starts the embedded server
log.record(f.decision(0), None, user_id="parent")
assert log.flush(5)
pid = os.fork()
if pid == 0:  # a worker that exits normally: every exit handler it inherited runs
    log.record(f.decision(1), None, user_id="child")
    sys.exit(0 if log.flush(5) else 1)
_, status = os.waitpid(pid, 0)
log.record(f.decision(2), None, user_id="parent")
print(os.waitstatus_to_exitcode(status), log.flush(5), log.counters.write_errors)
"""


def test_a_forked_worker_that_exits_leaves_the_embedded_server_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEERGUARD_REDIS_URL", raising=False)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", PREFORK, str(tmp_path)], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "True", "0"], done.stderr
    store = AuditStore.from_config(AuditConfig(home=tmp_path))
    try:
        users = [r.user_ref for r in store.query(kind="decision").records]
        assert users == [store.user_ref(u) for u in ("parent", "child", "parent")]
        assert store.verify().ok
    finally:
        store.close()
