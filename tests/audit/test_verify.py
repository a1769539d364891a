from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from steerguard.audit import AuditConfig, AuditLog, AuditStore
from steerguard.audit.chain import canonical, record_hash
from steerguard.audit.verify import verify_export
from steerguard.cli.audit import app as audit_cli

from . import factories as f


@pytest.fixture
def store(config: AuditConfig) -> AuditStore:
    with AuditLog(config) as log:
        for i in range(4):  # 4 requests x 3 records = seq 0..11 on one chain
            d = f.decision(i)
            log.record(d, f.result(d), user_id="alice")
        assert log.flush(5)
    s = AuditStore(redis.Redis.from_url(config.redis_url), config)
    assert s.verify().ok
    return s


def _entries(store: AuditStore) -> tuple[str, list[tuple[bytes, dict[bytes, bytes]]]]:
    stream = store.keys.stream(store.days()[0])
    return stream, store.client.xrange(stream)


def _rewrite(store: AuditStore, stream: str, entries: list) -> None:  # type: ignore[type-arg]
    """What someone with full rights could do: rebuild the stream, keeping entry ids."""
    store.client.delete(stream)
    for sid, fields in entries:
        store.client.xadd(stream, fields, id=sid)


def _problem(store: AuditStore, checkpoint: Path | None = None):  # type: ignore[no-untyped-def]
    report = store.verify(checkpoint)
    assert not report.ok
    return report.first


def test_modified_content_is_detected(store: AuditStore) -> None:
    stream, entries = _entries(store)
    sid, fields = entries[4]
    body = json.loads(fields[b"r"])
    body["strength"] = 0.0  # hide how hard the model was steered
    entries[4] = (sid, {b"r": canonical(body), b"h": fields[b"h"]})
    _rewrite(store, stream, entries)
    p = _problem(store)
    assert (p.kind, p.seq) == ("modified", 4)


def test_modified_and_rehashed_is_detected_by_the_next_link(store: AuditStore) -> None:
    stream, entries = _entries(store)
    sid, fields = entries[4]
    body = json.loads(fields[b"r"])
    body["strength"] = 0.0
    payload = canonical(body)
    entries[4] = (sid, {b"r": payload, b"h": record_hash(payload).encode()})
    _rewrite(store, stream, entries)
    p = _problem(store)
    assert (p.kind, p.seq) == ("modified", 4)


def test_deleted_record_is_detected(store: AuditStore) -> None:
    stream, entries = _entries(store)
    store.client.xdel(stream, entries[5][0])
    p = _problem(store)
    assert (p.kind, p.seq) == ("deleted", 5)


def test_inserted_record_is_detected(store: AuditStore) -> None:
    stream, entries = _entries(store)
    body = json.loads(entries[6][1][b"r"])
    body["outcome"] = {"status": "completed", "error_type": None}
    body["record_id"] = "forged"
    payload = canonical(body)
    store.client.xadd(stream, {"r": payload, "h": record_hash(payload)})
    p = _problem(store)
    assert (p.kind, p.seq) == ("inserted", 6)


def test_reordered_records_are_detected(store: AuditStore) -> None:
    stream, entries = _entries(store)
    (a, fa), (b, fb) = entries[2], entries[3]
    entries[2], entries[3] = (a, fb), (b, fa)
    _rewrite(store, stream, entries)
    p = _problem(store)
    assert (p.kind, p.seq) == ("reordered", 2)


def test_truncation_after_a_checkpoint_is_detected(store: AuditStore, tmp_path: Path) -> None:
    cp = tmp_path / "cp.jsonl"
    store.checkpoint(cp)
    stream, entries = _entries(store)
    store.client.xdel(stream, entries[-1][0], entries[-2][0])  # drop the tail: chain still links
    assert store.verify(tmp_path / "none.jsonl").ok  # without the checkpoint: invisible
    p = _problem(store, cp)
    assert p.kind == "truncated" and p.seq == 10


def test_writer_maxlen_zero_is_caught_by_entries_added(store: AuditStore, tmp_path: Path
                                                       ) -> None:
    cp = tmp_path / "cp.jsonl"
    store.checkpoint(cp)
    stream, _ = _entries(store)
    store.client.xadd(stream, {"r": b"{}", "h": b""}, maxlen=0)  # allowed to any XADD holder
    problems = store.verify(cp).problems
    assert {p.kind for p in problems} == {"truncated"}
    assert any("removed from the stream" in p.detail for p in problems)


def test_writer_checkpoints_on_close(config: AuditConfig, store: AuditStore) -> None:
    lines = config.resolved_checkpoint_path.read_text().splitlines()
    assert json.loads(lines[-1])["chains"]  # the writer's confirmed heads
    stream, entries = _entries(store)
    store.client.xdel(stream, entries[-1][0])
    assert _problem(store).kind == "truncated"  # the configured path is used by default


def test_retention_trims_whole_days_and_verify_accepts_anchor(
        config: AuditConfig, store: AuditStore) -> None:
    with AuditLog(config) as log:  # a second chain, same day
        log.record(f.decision(9), None, user_id="bob")
        assert log.flush(5)
    (day,) = store.days()
    from steerguard.audit.keys import day_start_ms

    assert store.trim(1, now_ms=day_start_ms(day) + 5 * 86_400_000) == [day]
    assert store.days() == []
    assert not list(store.client.scan_iter(match=store.keys.day_pattern(day)))
    assert store.verify().ok  # the anchors explain the missing history


def _export(store: AuditStore, path: Path, **span: object) -> list[bytes]:
    lines = list(store.export_lines(**span))  # type: ignore[arg-type]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return lines


def test_an_export_is_the_stored_records_and_verifies_on_its_own(store: AuditStore,
                                                                  tmp_path: Path) -> None:
    _, entries = _entries(store)
    lines = _export(store, tmp_path / "all.jsonl")
    assert lines == [fields[b"r"] for _, fields in entries]  # byte for byte
    assert [record_hash(line) for line in lines] == [fields[b"h"].decode()
                                                     for _, fields in entries]
    report = verify_export(tmp_path / "all.jsonl")
    assert report.ok and (report.records, report.chains) == (12, 1)


def test_an_export_from_the_middle_of_a_chain_verifies(store: AuditStore,
                                                       tmp_path: Path) -> None:
    """A time range may start anywhere in a chain: it is walked from its first line."""
    lines = _export(store, tmp_path / "all.jsonl")
    (tmp_path / "part.jsonl").write_bytes(b"".join(line + b"\n" for line in lines[6:]))
    assert verify_export(tmp_path / "part.jsonl").ok
    last = max(json.loads(line)["ts"] for line in lines)
    assert _export(store, tmp_path / "none.jsonl", since=last + 1) == []
    assert len(_export(store, tmp_path / "upto.jsonl", until=last)) == 12


@pytest.mark.parametrize("change", ["modify", "delete", "insert", "reorder"])
def test_a_changed_export_is_caught(store: AuditStore, tmp_path: Path, change: str) -> None:
    path = tmp_path / "x.jsonl"
    lines = _export(store, path)
    if change == "modify":
        lines[4] = lines[4].replace(b'"alice"', b'"mallory"').replace(b"calm", b"wild")
    elif change == "delete":
        del lines[4]
    elif change == "insert":
        lines.insert(5, lines[4])
    else:
        lines[4], lines[5] = lines[5], lines[4]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    report = verify_export(path)
    kind = {"modify": "modified", "delete": "deleted", "insert": "inserted",
            "reorder": "reordered"}[change]
    assert not report.ok and report.first is not None and report.first.kind == kind
    assert report.first.where is not None and report.first.where.startswith("x.jsonl:")


def test_a_checkpoint_covers_the_last_record_of_an_export(store: AuditStore,
                                                          tmp_path: Path) -> None:
    """Nothing in the file links to its last record; the checkpointed head does."""
    cp = tmp_path / "cp.jsonl"
    store.checkpoint(cp)
    path = tmp_path / "x.jsonl"
    lines = _export(store, path)
    body = json.loads(lines[-1])
    body["vector"] = "wild"
    lines[-1] = canonical(body)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    assert verify_export(path).ok  # by itself the file cannot tell
    report = verify_export(path, cp)
    assert not report.ok and report.first is not None
    assert (report.first.kind, report.first.seq) == ("modified", 11)


_CORRUPTIONS = {
    "torn last line": lambda ls: [*ls[:-1], ls[-1][: len(ls[-1]) // 2]],
    "torn middle line": lambda ls: [*ls[:5], ls[5][:40], *ls[6:]],
    "random bytes": lambda ls: [*ls[:5], bytes(range(256)).replace(b"\n", b""), *ls[5:]],
    "invalid JSON": lambda ls: [*ls[:5], b'{"chain": "c", "seq": 5,', *ls[6:]],
    "a JSON list": lambda ls: [*ls[:5], b"[1, 2, 3]", *ls[6:]],
    "seq a string": lambda ls: [*ls[:5], ls[5].replace(b'"seq":5', b'"seq":"5"'), *ls[6:]],
    "seq infinite": lambda ls: [*ls[:5], ls[5].replace(b'"seq":5', b'"seq":1e999'), *ls[6:]],
    "seq negative": lambda ls: [*ls[:5], ls[5].replace(b'"seq":5', b'"seq":-5'), *ls[6:]],
    "chain a number": lambda ls: [*ls[:5], re.sub(rb'"chain":"[^"]*"', b'"chain":7', ls[5]),
                                  *ls[6:]],
    "deeply nested": lambda ls: [*ls[:5], b"[" * 100_000 + b"]" * 100_000, *ls[6:]],
    "flipped byte": lambda ls: [*ls[:5], ls[5][:30] + bytes([ls[5][30] ^ 1]) + ls[5][31:],
                                *ls[6:]],
    "not UTF-8": lambda ls: [*ls[:5], ls[5].replace(b"calm", b"c\xffm"), *ls[6:]],
}


@pytest.mark.parametrize("kind", sorted(_CORRUPTIONS))
def test_a_corrupted_export_gets_a_verdict_naming_the_file_and_line(
    store: AuditStore, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "x.jsonl"
    lines = _CORRUPTIONS[kind](_export(store, path))
    path.write_bytes(b"\n".join(lines) + (b"" if kind == "torn last line" else b"\n"))
    report = verify_export(path)
    assert not report.ok and report.first is not None
    line = 12 if kind == "torn last line" else 6
    assert report.first.where == f"x.jsonl:{line}", report.first
    res = CliRunner().invoke(audit_cli, ["verify", "--file", str(path)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert f"x.jsonl:{line}" in res.output


def test_a_corrupted_checkpoint_file_is_a_problem_not_a_crash(store: AuditStore,
                                                             tmp_path: Path) -> None:
    path, cp = tmp_path / "x.jsonl", tmp_path / "cp.jsonl"
    _export(store, path)
    store.checkpoint(cp)
    good = cp.read_bytes()
    cp.write_bytes(good + b'{"chains": {"c": {"seq": "x"}}}\n' + b"\xff\n" + good)
    report = verify_export(path, cp)
    assert [(p.kind, p.where) for p in report.problems] == [
        ("unreadable", f"{cp}:2"), ("unreadable", f"{cp}:3")]
    assert "checkpoint line is not a checkpoint" in report.problems[0].detail
    assert not store.verify(cp).ok  # the same for the log in Redis


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_verify_export_reads_any_bytes(store: AuditStore, tmp_path: Path,
                                       data: st.DataObject) -> None:
    """Whatever the file holds, a verdict comes back, and every problem names a line of it."""
    original = b"".join(line + b"\n" for line in store.export_lines())
    blob = bytearray(original)
    for _ in range(data.draw(st.integers(1, 6), label="changes")):
        at = data.draw(st.integers(0, len(blob)), label="at")
        what = data.draw(st.sampled_from(["flip", "cut", "insert", "delete"]), label="what")
        if what == "flip" and at < len(blob):
            blob[at] ^= data.draw(st.integers(1, 255), label="xor")
        elif what == "cut":
            del blob[at:]
        elif what == "insert":
            blob[at:at] = data.draw(st.binary(max_size=40), label="bytes")
        else:
            del blob[at:at + data.draw(st.integers(1, 300), label="n")]
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(bytes(blob))
    report = verify_export(path)
    n_lines = bytes(blob).count(b"\n") + 1
    for p in report.problems:
        assert p.where is not None and p.where.startswith("fuzz.jsonl:")
        assert 1 <= int(p.where.rsplit(":", 1)[1]) <= n_lines
    if bytes(blob) == original:
        assert report.ok


def test_random_bytes_are_a_verdict(tmp_path: Path) -> None:
    path = tmp_path / "noise.jsonl"
    path.write_bytes(random.Random(7).randbytes(20_000))
    report = verify_export(path)
    assert not report.ok and all(p.kind == "unreadable" for p in report.problems)
