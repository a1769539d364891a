"""The spill file is shared by the writers of one prefix: appends wait while a replay holds it,
so emptying it after a replay drops nothing; a torn or failed line spoils nothing after it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from steerguard.audit import AuditConfig, AuditLog, AuditStore
from steerguard.audit import spill as spill_module
from steerguard.audit.spill import SpillFile, SpillFull

from . import factories as f
from .conftest import OwnServer


def lines(n: int, tag: str) -> list[tuple[str, bytes]]:
    return [(f"{tag}{k}", b'{"n":%d}' % k) for k in range(n)]


def test_an_append_during_a_replay_waits_and_survives_it(tmp_path: Path) -> None:
    path = tmp_path / "spill.jsonl"
    ours, theirs = SpillFile(path, 1 << 20), SpillFile(path, 1 << 20)  # two writers
    ours.append(lines(3, "a"))
    appended = threading.Event()

    def append_theirs() -> None:
        theirs.append(lines(2, "b"))
        appended.set()

    with ours.replaying() as replay:
        read = [h for h, _ in replay]
        worker = threading.Thread(target=append_theirs)
        worker.start()
        assert not appended.wait(0.2)  # waits for the replay to end
    worker.join(5)
    assert read == ["a0", "a1", "a2"]
    assert [h for h, _ in ours.read()] == ["b0", "b1"]  # theirs, after the emptying
    assert not ours.empty and not theirs.empty


def test_a_failed_replay_keeps_every_line(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "spill.jsonl", 1 << 20)
    spill.append(lines(3, "a"))
    with pytest.raises(ConnectionError), spill.replaying() as replay:
        next(replay)
        raise ConnectionError("Redis went away mid-replay")
    assert [h for h, _ in spill.read()] == ["a0", "a1", "a2"]


def test_a_torn_last_line_is_cut_before_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "spill.jsonl"
    spill = SpillFile(path, 1 << 20)
    spill.append(lines(2, "a"))
    with open(path, "ab") as f:
        f.write(b'a2 {"n":')  # a crash in the middle of a line
    assert [h for h, _ in spill.read()] == ["a0", "a1"]
    spill.append(lines(1, "b"))
    assert [h for h, _ in spill.read()] == ["a0", "a1", "b0"]


def test_a_failed_append_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "spill.jsonl"
    spill = SpillFile(path, 1 << 20)
    spill.append(lines(1, "a"))
    size = path.stat().st_size
    real_write = os.write

    def half_then_full(fd: int, data: memoryview) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spill_module.os, "write", half_then_full)
    with pytest.raises(OSError):
        spill.append(lines(4, "b"))
    monkeypatch.undo()
    assert path.stat().st_size == size
    with pytest.raises(SpillFull):
        SpillFile(path, size + 5).append(lines(1, "c"))
    assert path.stat().st_size == size


def test_two_logs_of_one_prefix_spill_to_one_file_and_lose_nothing(own_server: OwnServer,
                                                                   tmp_path: Path) -> None:
    """Two worker processes' logs (one home, one prefix) spill while Redis is down. When it
    is back, the quick one replays the file, both chains, while the slow one (still backing
    off) goes on spilling into it: nothing it appends meanwhile may be emptied away."""
    base = dict(redis_url=own_server.url, key_prefix="sg", home=tmp_path / "home",
                socket_timeout_s=0.5, spill_fsync=False, batch_size=8)
    quick = AuditLog(AuditConfig(**base, retry_initial_s=0.02, retry_max_s=0.05))
    slow = AuditLog(AuditConfig(**base, retry_initial_s=1.5, retry_max_s=1.5))
    assert quick.spill_path == slow.spill_path
    ids: list[str] = []

    def record(log: AuditLog, i: int) -> None:
        d = f.decision(i)
        ids.extend(log.record(d, f.result(d), user_id=f"user-{i % 3}", session_id="s"))

    own_server.kill()
    for i in range(40):
        record(quick if i % 2 else slow, i)
    deadline = time.monotonic() + 10
    while quick.counters.spilled + slow.counters.spilled < len(ids):
        assert time.monotonic() < deadline, (quick.counters, slow.counters)
        time.sleep(0.02)
    own_server.start()
    for i in range(40, 240):  # the slow one spills on while the quick one replays
        record(slow, i)
        time.sleep(0.002)
    for log in (quick, slow):
        assert log.flush(20), log.counters
    counters = [log.close() for log in (quick, slow)]
    assert sum(c.dropped for c in counters) == 0

    cfg = AuditConfig(**base)
    store = AuditStore(own_server.client(), cfg)
    stored = [r.record_id for r in store.iter_records()]
    assert len(stored) == len(set(stored)) == len(ids)
    for log in (quick, slow):  # each chain whole, in its own order
        own = [i for i in stored if i.startswith(log.chain_id + "-")]
        assert own == [i for i in ids if i.startswith(log.chain_id + "-")]
    report = store.verify()
    assert report.ok and report.records == len(ids), report.first
    assert SpillFile(cfg.resolved_spill_path, 1 << 20).empty
