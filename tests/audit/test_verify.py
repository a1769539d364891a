from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from steerguard.audit import AuditConfig, AuditLog, AuditStore
from steerguard.audit.chain import canonical, record_hash
from steerguard.audit.verify import verify_export

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
