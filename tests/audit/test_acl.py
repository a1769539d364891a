"""The ACL users of deploy/redis/users.acl, on a real server of the test's own."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from steerguard.audit import AuditConfig, AuditLog, AuditStore
from steerguard.audit.acl import acl_file, acl_rules

from . import factories as f
from .conftest import OwnServer


@pytest.fixture
def users(own_server: OwnServer) -> OwnServer:
    admin = own_server.client()
    for user, rules in acl_rules("sg").items():
        admin.execute_command("ACL", "SETUSER", user, "on", f">{user}-pw", *rules)
    return own_server


def _as(server: OwnServer, user: str) -> redis.Redis:
    return server.client(username=user, password=f"{user}-pw")


def test_writer_writes_through_the_log_and_reader_reads(users: OwnServer, tmp_path: Path
                                                        ) -> None:
    cfg = AuditConfig(redis_url=users.url_as("writer", "writer-pw"), home=tmp_path)
    with AuditLog(cfg) as log:
        d = f.decision(1)
        ids = log.record(d, f.result(d), user_id="alice", session_id="s1")
        assert log.flush(5), log._writer.last_error
        assert log.counters.write_errors == 0
    store = AuditStore(_as(users, "reader"), cfg)
    assert [r.record_id for r in store.query(user="alice").records] == ids
    assert store.stats().total.decisions == 1
    assert store.verify(tmp_path / "none").ok


def test_reader_url_serves_queries_while_the_log_writes_as_writer(
    users: OwnServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deployment split of docker-compose.yml: STEERGUARD_REDIS_URL as `writer`,
    STEERGUARD_REDIS_READER_URL as `reader`; queries and verify go through the reader."""
    monkeypatch.setenv("STEERGUARD_REDIS_URL", users.url_as("writer", "writer-pw"))
    monkeypatch.setenv("STEERGUARD_REDIS_READER_URL", users.url_as("reader", "reader-pw"))
    cfg = AuditConfig.load(home=tmp_path)
    with AuditLog(cfg) as log:
        d = f.decision(2)
        ids = log.record(d, f.result(d), user_id="bob", session_id="s2")
        assert log.flush(5), log._writer.last_error
    store = AuditStore.from_config(cfg)
    try:
        assert [r.record_id for r in store.query(user="bob").records] == ids
        assert store.verify(tmp_path / "none").ok
        with pytest.raises(redis.exceptions.NoPermissionError):
            store.client.xtrim(store.keys.stream(store.days()[-1]), maxlen=0)
    finally:
        store.close()
    writer_store = AuditStore.from_config(cfg, read_only=False)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            writer_store.query(user="bob")
    finally:
        writer_store.close()


def test_writer_cannot_read_the_user_index_or_the_log(users: OwnServer, tmp_path: Path) -> None:
    cfg = AuditConfig(redis_url=users.url, home=tmp_path)
    with AuditLog(cfg) as log:
        log.record(f.decision(1), None, user_id="alice")
        assert log.flush(5)
    user_keys = [k.decode() for k in users.client().scan_iter(match="sg:*:u:*")]
    stream = next(k.decode() for k in users.client().scan_iter(match="sg:*:log"))
    assert user_keys
    writer = _as(users, "writer")
    for call in (lambda: writer.zrange(user_keys[0], 0, -1), lambda: writer.zcard(user_keys[0]),
                 lambda: writer.xrange(stream), lambda: writer.keys("*"),
                 lambda: writer.eval("return redis.call('ZRANGE', KEYS[1], 0, -1)", 1,
                                     user_keys[0])):
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
    # even given every read command, the key pattern keeps the user index write-only
    users.client().execute_command("ACL", "SETUSER", "writer", "+@read")
    with pytest.raises(redis.exceptions.NoPermissionError, match="key"):
        writer.zrange(user_keys[0], 0, -1)
    with pytest.raises(redis.exceptions.NoPermissionError, match="key"):
        writer.xrange(stream)


def test_reader_is_denied_every_write(users: OwnServer) -> None:
    reader = _as(users, "reader")
    writes = {
        "xadd": lambda: reader.xadd("sg:{20250101}:log", {"r": "x"}),
        "xdel": lambda: reader.xdel("sg:{20250101}:log", "1-0"),
        "xtrim": lambda: reader.xtrim("sg:{20250101}:log", maxlen=0),
        "zadd": lambda: reader.zadd("sg:{20250101}:u:x", {"m": 1}),
        "hset": lambda: reader.hset("sg:{20250101}:head", "c", 1),
        "del": lambda: reader.delete("sg:days"),
        "set": lambda: reader.set("sg:x", 1),
        "eval": lambda: reader.eval("return 1", 0),
        "flushall": lambda: reader.flushall(),
        "config": lambda: reader.config_set("appendonly", "no"),
    }
    for name, call in writes.items():
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
            pytest.fail(f"reader could {name}")


def test_shipped_acl_file_matches_the_rules() -> None:
    shipped = Path(__file__).parents[2] / "deploy" / "redis" / "users.acl"
    expected = acl_file("sg", {"writer": "writer-dev-password", "reader": "reader-dev-password",
                               "auditadmin": "admin-dev-password"})
    assert shipped.read_text() == expected
