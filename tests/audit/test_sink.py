"""The pipelined write path: a batch sent behind one that failed in flight is refused by the
script, not written out of order, and both land in order once settled."""

from __future__ import annotations

from pathlib import Path

from steerguard.audit import AuditConfig, AuditLog, AuditStore
from steerguard.audit.keys import KeySpace
from steerguard.audit.lua import WRITE_BATCH
from steerguard.audit.sealed import Sealed
from steerguard.audit.sink import RedisSink

from . import factories as f
from .conftest import OwnServer


def sealed(server: OwnServer, home: Path, requests: int
           ) -> tuple[AuditConfig, AuditLog, list[str], list[Sealed]]:
    """A log that is not started, its records' ids, and its records sealed but not written
    (taken from the writer, so that closing the log writes nothing)."""
    cfg = AuditConfig(redis_url=server.url, key_prefix="sg", home=home, spill_fsync=False)
    log = AuditLog(cfg, start=False)
    ids: list[str] = []
    for i in range(requests):
        d = f.decision(i)
        ids.extend(log.record(d, f.result(d), user_id="u", session_id="s"))
    writer = log._writer
    writer._seal_queued()
    records, writer.pending = writer.pending, []
    assert {r.day for r in records} == {records[0].day}  # one chain, one day
    return cfg, log, ids, records


def test_a_batch_behind_a_failed_one_waits_for_it(own_server: OwnServer, tmp_path: Path) -> None:
    cfg, log, ids, records = sealed(own_server, tmp_path, 8)
    first, second = records[:12], records[12:]

    client = own_server.client()
    sink = RedisSink(client, KeySpace("sg"), batch_size=512)
    client.script_flush()  # this server is the test's own
    a = sink.send(first)  # runs into NOSCRIPT
    client.script_load(WRITE_BATCH)
    b = sink.send(second)  # the script is back: without `expect` it would land first
    assert a.wait() == len(first)  # redone the careful way
    assert b.wait() == len(second)
    sink.release()

    store = AuditStore(client, cfg)
    assert [r.record_id for r in store.iter_records()] == ids
    assert store.verify().ok
    log.close()


def test_after_a_failed_batch_the_writer_pipelines_again(own_server: OwnServer,
                                                         tmp_path: Path) -> None:
    """A fresh server has no script, so the first batch fails and is written again the
    careful way; the batch already sent behind it is refused and redone too. The batches
    after them must go back to pipelining: each one used to be sent before its predecessor
    was redone, refused in turn, and the whole backlog went one call at a time."""
    cfg = AuditConfig(redis_url=own_server.url, key_prefix="sg", home=tmp_path,
                      spill_fsync=False, batch_size=6)
    log = AuditLog(cfg, start=False)
    ids: list[str] = []
    for i in range(40):  # 120 records: 20 batches
        d = f.decision(i)
        ids.extend(log.record(d, f.result(d), user_id="u", session_id="s"))
    sink = log._writer.sink
    careful: list[int] = []
    write_run = sink._write_run

    def counted(run):  # type: ignore[no-untyped-def]
        careful.append(len(run))
        return write_run(run)

    sink._write_run = counted  # type: ignore[method-assign]
    log._writer.start()
    assert log.flush(10)
    assert log.counters.written == 120
    assert len(careful) == 2, careful
    store = AuditStore(own_server.client(), cfg)
    assert [r.record_id for r in store.iter_records()] == ids
    assert store.verify().ok
    log.close()


def test_a_pipelined_batch_finds_records_the_server_lost_and_writes_them_first(
        own_server: OwnServer, tmp_path: Path) -> None:
    """The server comes back without records it acknowledged: the next pipelined batch names
    the head it follows, is refused, and the lost records are written again before it."""
    cfg, log, ids, records = sealed(own_server, tmp_path, 12)
    a, b, c = records[:12], records[12:24], records[24:]

    sink = RedisSink(own_server.client(), KeySpace("sg"), batch_size=512)
    assert sink.write(a) == len(a)
    own_server.snapshot(tmp_path / "snap")
    assert sink.write(b) == len(b)
    own_server.kill()
    own_server.restore(tmp_path / "snap")
    own_server.start()

    store = AuditStore(own_server.client(), cfg)
    # b at least: the snapshot may lack a's last records too, if the server had postponed
    # its AOF write (the very loss modelled here)
    lost = len(a) + len(b) - len(list(store.iter_records()))
    assert lost >= len(b)

    # a new connection, the same memory of what was confirmed
    again = RedisSink(own_server.client(), KeySpace("sg"), batch_size=512, recent=sink.recent)
    assert again.send(c).wait() == len(c)
    again.release()
    assert (again.rewritten, again.lost) == (lost, 0)
    assert [r.record_id for r in store.iter_records()] == ids
    assert store.verify().ok
    log.close()
