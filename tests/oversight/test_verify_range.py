"""verify_days: the chain verdict of a range of days, over records the writer put on two
days (its clock moved back for the first)."""

from __future__ import annotations

import json
import time
import types
from datetime import UTC, datetime, timedelta

import pytest
import redis

from steerguard.audit import AuditConfig, AuditLog, AuditStore
from steerguard.audit import log as audit_log
from steerguard.audit.keys import day_of
from steerguard.audit.verify import verify_days
from steerguard.canonical import canonical
from tests.audit import factories as f

pytestmark = pytest.mark.redis


@pytest.fixture
def two_days(config: AuditConfig, monkeypatch: pytest.MonkeyPatch) -> AuditStore:
    yesterday = time.time() - 86_400
    with AuditLog(config) as log:
        monkeypatch.setattr(audit_log, "time", types.SimpleNamespace(
            time=lambda: yesterday, monotonic=time.monotonic, perf_counter=time.perf_counter))
        for i in range(3):
            d = f.decision(i)
            log.record(d, f.result(d), user_id="alice")
        monkeypatch.setattr(audit_log, "time", time)
        for i in range(3, 6):
            d = f.decision(i)
            log.record(d, f.result(d), user_id="alice")
        assert log.flush(10)
    store = AuditStore(redis.Redis.from_url(config.redis_url or ""), config)
    assert len(store.days()) == 2
    return store


def test_a_range_that_starts_mid_chain_verifies(two_days: AuditStore) -> None:
    days = two_days.days()
    whole = verify_days(two_days.client, two_days.keys, days)
    assert whole.ok and whole.records == 18
    today = verify_days(two_days.client, two_days.keys, days[1:])
    assert today.ok and today.records == 9  # walked from seq 9, its first record there
    none = verify_days(two_days.client, two_days.keys, ["20000101"])
    assert none.ok and none.records == 0


def test_a_changed_record_in_the_range_is_found(two_days: AuditStore) -> None:
    day = two_days.days()[1]
    stream = two_days.keys.stream(day)
    entries = two_days.client.xrange(stream)
    body = json.loads(entries[2][1][b"r"])
    body["strength"] = 0.0
    two_days.client.delete(stream)
    for k, (sid, fields) in enumerate(entries):
        two_days.client.xadd(stream, {b"r": canonical(body), b"h": fields[b"h"]} if k == 2
                             else fields, id=sid)
    report = verify_days(two_days.client, two_days.keys, [day])
    assert not report.ok
    assert report.first is not None and report.first.kind == "modified"
    assert report.first.seq == 11 and report.first.where == f"{day}/{entries[2][0].decode()}"
    # the earlier day alone is still intact
    assert verify_days(two_days.client, two_days.keys, two_days.days()[:1]).ok


def test_the_range_from_the_log_start_sees_a_deleted_first_record(
        two_days: AuditStore) -> None:
    day = two_days.days()[0]
    first = two_days.client.xrange(two_days.keys.stream(day), count=1)[0][0]
    two_days.client.xdel(two_days.keys.stream(day), first)
    report = verify_days(two_days.client, two_days.keys, [day])
    assert report.first is not None and report.first.kind == "deleted"
    assert report.first.seq == 0
    assert day == day_of(int((datetime.now(UTC) - timedelta(days=1)).timestamp() * 1000))
