"""The spill file is shared by the writers of one prefix: appends wait while a replay holds it,
so emptying it after a replay drops nothing; a torn or failed line spoils nothing after it,
and a line that is not a record is set aside in <spill>.rejected, never dropped."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steerguard.audit import AuditConfig, AuditLog, AuditStore
from steerguard.audit import spill as spill_module
from steerguard.audit.chain import record_hash
from steerguard.audit.spill import SpillFile, SpillFull

from . import factories as f
from .conftest import OwnServer


def lines(n: int, tag: str) -> list[tuple[str, bytes]]:
    """(hash, payload) of n small records named tag0, tag1, ..."""
    payloads = [b'{"name":"%s%d"}' % (tag.encode(), k) for k in range(n)]
    return [(record_hash(p), p) for p in payloads]


def name(digest: str, payload: bytes) -> str:
    """A replay parser for the records of `lines`."""
    return str(json.loads(payload)["name"])


def names(pairs: object) -> list[str]:
    return [name(h, p) for h, p in pairs]  # type: ignore[attr-defined]


def test_an_append_during_a_replay_waits_and_survives_it(tmp_path: Path) -> None:
    path = tmp_path / "spill.jsonl"
    ours, theirs = SpillFile(path, 1 << 20), SpillFile(path, 1 << 20)  # two writers
    ours.append(lines(3, "a"))
    appended = threading.Event()

    def append_theirs() -> None:
        theirs.append(lines(2, "b"))
        appended.set()

    with ours.replaying(name) as replay:
        read = list(replay)
        worker = threading.Thread(target=append_theirs)
        worker.start()
        assert not appended.wait(0.2)  # waits for the replay to end
    worker.join(5)
    assert read == ["a0", "a1", "a2"]
    assert names(ours.read()) == ["b0", "b1"]  # theirs, after the emptying
    assert not ours.empty and not theirs.empty


def test_a_failed_replay_keeps_every_line(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "spill.jsonl", 1 << 20)
    spill.append(lines(3, "a"))
    with pytest.raises(ConnectionError), spill.replaying(name) as replay:
        next(iter(replay))
        raise ConnectionError("Redis went away mid-replay")
    assert names(spill.read()) == ["a0", "a1", "a2"]


def test_a_torn_last_line_is_set_aside_before_the_next_append(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    path = tmp_path / "spill.jsonl"
    spill = SpillFile(path, 1 << 20)
    spill.append(lines(2, "a"))
    digest, payload = lines(3, "a")[2]
    torn = digest.encode() + b" " + payload[:9]
    with open(path, "ab") as out:
        out.write(torn)  # a crash in the middle of a line
    assert names(spill.read()) == ["a0", "a1"]
    with caplog.at_level(logging.WARNING, "steerguard.audit"):
        spill.append(lines(1, "b"))
    assert names(spill.read()) == ["a0", "a1", "b0"]
    assert spill.rejected_path.read_bytes() == torn + b"\n"  # kept, not deleted
    assert spill.rejected_lines == 1
    assert f"{path} line 3 is not a record (a torn last line" in caplog.text


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


def _line(pair: tuple[str, bytes]) -> bytes:
    return pair[0].encode() + b" " + pair[1] + b"\n"


def test_bad_lines_in_the_middle_are_set_aside_and_the_records_around_them_replay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spill = SpillFile(tmp_path / "spill.jsonl", 1 << 20)
    good = [_line(x) for x in lines(6, "a")]
    flipped = good[1].replace(b'"a1"', b'"a7"')  # changed bytes: the hash no longer fits
    cut = good[3][:-6] + b"\n"  # torn, but followed by a newline
    glued = good[4][:30]  # torn without its newline: the next record was appended to it
    spill.path.write_bytes(good[0] + flipped + good[2] + cut + glued + good[5]
                           + b"\xff\xfenot-even-text\n" + b"\n")
    with caplog.at_level(logging.WARNING, "steerguard.audit"), spill.replaying(name) as replay:
        replayed = list(replay)
    assert replayed == ["a0", "a2", "a5"]  # before, between and after the bad lines
    assert [(r.line, r.reason) for r in replay.rejected] == [
        (2, "its hash does not match its bytes (changed or torn)"),
        (4, "its hash does not match its bytes (changed or torn)"),
        (5, "a torn line, with the record after it glued on (kept)"),
        (6, "not '<hash> <record>'"),
    ]
    kept = spill.rejected_path.read_bytes()
    assert kept == flipped + cut + glued + b"\n" + b"\xff\xfenot-even-text\n"
    assert spill.empty and spill.rejected_lines == 4
    assert caplog.text.count("is not a record") == 4


def test_a_line_whose_record_cannot_be_read_is_set_aside(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "spill.jsonl", 1 << 20)
    odd = b'{"nom":"a1"}'  # hash and bytes agree; the parser cannot read it
    spill.append([*lines(1, "a"), (record_hash(odd), odd), *lines(2, "b")])
    with spill.replaying(name) as replay:
        assert list(replay) == ["a0", "b0", "b1"]
    (rejected,) = replay.rejected
    assert rejected.line == 2 and rejected.reason.startswith("not an audit record: KeyError")
    assert spill.rejected_path.read_bytes() == _line((record_hash(odd), odd))


def test_a_failed_replay_sets_nothing_aside_twice(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "spill.jsonl", 1 << 20)
    spill.path.write_bytes(b"garbage\n" + b"".join(_line(x) for x in lines(2, "a")))
    with pytest.raises(ConnectionError), spill.replaying(name) as replay:
        list(replay)
        raise ConnectionError("Redis went away")
    assert not spill.rejected_path.exists()  # the next replay sets it aside, once
    with spill.replaying(name) as replay:
        assert list(replay) == ["a0", "a1"]
    assert spill.rejected_path.read_bytes() == b"garbage\n"


_damage = st.sampled_from(["flip", "cut", "glue", "garbage"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 12), damage=st.dictionaries(st.integers(0, 11), _damage, max_size=4),
       seed=st.integers(0, 2**16), tail=st.booleans())
def test_replay_keeps_every_intact_record_and_every_bad_byte(
    tmp_path_factory: pytest.TempPathFactory, n: int, damage: dict[int, str], seed: int,
    tail: bool
) -> None:
    """Damaged lines anywhere: every intact record replays, in order, and the bytes of every
    damaged line are in the .rejected file."""
    import random

    rng = random.Random(seed)
    spill = SpillFile(tmp_path_factory.mktemp("spill") / "spill.jsonl", 1 << 20, fsync=False)
    records = lines(n, "r")
    data, intact, bad = b"", [], []
    for i, pair in enumerate(records):
        line = _line(pair)
        kind = damage.get(i)
        if kind == "glue" and (i + 1 == n or i + 1 in damage):
            kind = "cut"  # a glued line needs an intact one after it
        if kind is None:
            intact.append(name(*pair))
            data += line
        elif kind == "flip":
            at = rng.randrange(len(line) - 1)
            changed = line[:at] + bytes([line[at] ^ rng.choice([1, 2, 4, 8, 0x40])]) + line[at + 1:]
            if b"\n" in changed[:-1]:
                changed = line[:at] + b"#" + line[at + 1:]
            if changed == line:
                changed = line[:-1] + b"#\n"
            data += changed
            bad.append(changed)
        elif kind == "cut":
            data += line[:rng.randrange(1, len(line) - 1)] + b"\n"
            bad.append(data.rsplit(b"\n", 2)[-2] + b"\n")
        elif kind == "glue":
            torn = line[:rng.randrange(1, len(line) - 1)]
            data += torn
            bad.append(torn + b"\n")
        else:
            junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
            junk = junk.replace(b"\n", b"") or b"?"
            data += junk + b"\n" + line
            intact.append(name(*pair))
            bad.append(junk + b"\n")
    if tail:  # a crash in the middle of the last write
        data += _line(lines(1, "z")[0])[:20]
        bad.append(_line(lines(1, "z")[0])[:20] + b"\n")
    spill.path.write_bytes(data)
    with spill.replaying(name) as replay:
        assert list(replay) == intact
    assert spill.empty
    kept = spill.rejected_path.read_bytes() if spill.rejected_path.exists() else b""
    assert kept == b"".join(bad)
    assert len(replay.rejected) == len(bad)


def test_a_damaged_spill_line_costs_only_its_own_record(config: AuditConfig,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    """Records spilled while Redis was away, one line damaged on disk meanwhile: the writer
    replays the others into Redis, sets the bad line aside, counts and logs it; verify then
    names the one record that is missing."""
    away = config.model_copy(update={"redis_url": "redis://127.0.0.1:1/0",
                                     "socket_timeout_s": 0.2})
    with AuditLog(away) as log:
        for i in range(3):
            d = f.decision(i)
            log.record(d, f.result(d), user_id="alice")
    counters = log.close()
    assert counters.spilled == 9 and counters.written == 0
    spilled = log.spill_path.read_bytes().split(b"\n")
    spilled[4] = spilled[4].replace(b"alice", b"mallo", 1) if b"alice" in spilled[4] else (
        spilled[4][:-2] + b"}}")
    log.spill_path.write_bytes(b"\n".join(spilled))

    with caplog.at_level(logging.WARNING, "steerguard.audit"), AuditLog(config) as log:
        assert log.flush(10)
        counters = log.counters
    assert (counters.replayed, counters.spill_rejected) == (8, 1)
    assert spill_module.SpillFile(log.spill_path, 1).rejected_path.read_bytes() == (
        spilled[4] + b"\n")
    assert "line 5 is not a record" in caplog.text
    store = AuditStore.from_config(config)
    assert sorted(r.seq for r in store.iter_records()) == [0, 1, 2, 3, 5, 6, 7, 8]
    report = store.verify()
    assert [(p.kind, p.seq) for p in report.problems] == [("deleted", 4)]
