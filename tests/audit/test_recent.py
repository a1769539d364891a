"""What the writer keeps of the records Redis confirmed (no Redis needed)."""

from __future__ import annotations

import time

import pytest

from steerguard.audit.build import RecordBuilder, RequestItem
from steerguard.audit.chain import ChainHead, record_hash
from steerguard.audit.keys import day_start_ms
from steerguard.audit.masking import Masker
from steerguard.audit.recent import RecentWrites
from steerguard.audit.records import BundleInfo, DecisionRecord, Outcome
from steerguard.audit.sealed import Sealed
from steerguard.canonical import canonical

from . import factories as f


def sealed(seq: int, day: str = "20261130", chain: str = "c") -> Sealed:
    """The least a record holds (a decision record matching no rule), as stored."""
    record = DecisionRecord(record_id=f"{chain}-{seq}", ts=day_start_ms(day), chain=chain,
                            seq=seq, prev="", decision_id="d", plan_hash="p",
                            bundle=BundleInfo(name="b", revision="1", hash="h"),
                            outcome=Outcome.completed())
    payload = canonical(record.model_dump(mode="json"))
    return Sealed.read(record_hash(payload), payload)


def run(first: int, n: int, day: str = "20261130", chain: str = "c") -> list[Sealed]:
    return [sealed(s, day, chain) for s in range(first, first + n)]


def test_keeps_the_newest_records_up_to_the_bound_and_every_head() -> None:
    recent = RecentWrites(window_s=60, max_records=10)
    for first in range(0, 30, 5):
        recent.confirmed(run(first, 5))
    assert [r.seq for r in recent.after("c", "20261130", -1)] == list(range(20, 30))
    assert recent.head("c", "20261130") == 29
    assert recent.first("c", "20261130") == 0  # known after its records aged out
    assert recent.head("c", "20261201") == -1 and recent.first("c", "20261201") == -1


def test_kept_records_come_back_as_they_were_confirmed() -> None:
    """The window keeps bytes, not the records' objects, and parses them back to rewrite:
    what comes back is what was sent, index keys and aggregate fields included."""
    builder = RecordBuilder(b"k" * 32, Masker([]), store_user_id=False, store_text=False)
    head, records = ChainHead("c"), []
    for n in range(4):
        d = f.decision(n)
        r = f.result(d)
        item = RequestItem([f"r{n}-{k}" for k in range(3)], day_start_ms("20261130") + n, d,
                           r.reports, r, Outcome.completed(), "req", "s", "u", None, "hi",
                           None, None, None, None)
        records.extend(Sealed.seal(head, draft) for draft in builder.build(item)[0])
    recent = RecentWrites(window_s=60, max_records=100)
    recent.confirmed(records[:5])
    recent.confirmed(records[5:])
    assert recent.after("c", "20261130", 1) == records[2:]


def test_records_older_than_the_window_age_out() -> None:
    recent = RecentWrites(window_s=0.0, max_records=1000)
    recent.confirmed(run(0, 5))
    time.sleep(0.01)
    recent.confirmed(run(5, 5))  # later than the window after the first: it goes
    assert [r.seq for r in recent.after("c", "20261130", -1)] == list(range(5, 10))


def test_after_selects_one_chain_and_day_in_order() -> None:
    recent = RecentWrites(window_s=60, max_records=1000)
    recent.confirmed(run(0, 3))
    recent.confirmed(run(0, 3, chain="other"))
    recent.confirmed(run(3, 3, day="20261201"))
    assert [r.seq for r in recent.after("c", "20261130", 0)] == [1, 2]
    assert recent.heads() == [
        ("c", "20261130", 2), ("other", "20261130", 2), ("c", "20261201", 5)]


def test_a_head_set_by_hand_keeps_the_first_seq() -> None:
    recent = RecentWrites(window_s=60, max_records=1000)
    recent.confirmed(run(10, 5))
    recent.set_head("c", "20261130", 12)  # the server holds less than was confirmed
    assert (recent.first("c", "20261130"), recent.head("c", "20261130")) == (10, 12)
    recent.set_head("c", "20261201", 40)  # first seen here by its head alone
    assert recent.first("c", "20261201") == 40


def test_heads_to_check_are_those_with_records_kept() -> None:
    recent = RecentWrites(window_s=60, max_records=4)
    recent.confirmed(run(0, 3, day="20261129"))
    recent.confirmed(run(3, 4))  # the older day's records age out
    assert recent.heads() == [("c", "20261130", 6)]
    assert recent.head("c", "20261129") == 2


def test_a_gap_is_counted_once_when_a_retry_writes_the_rest() -> None:
    """Records past the window are counted lost once, even when writing the kept ones again
    fails and is retried (the mechanics only: Redis's replies are scripted here)."""
    import redis

    from steerguard.audit.keys import KeySpace
    from steerguard.audit.sink import RedisSink

    recent = RecentWrites(window_s=60, max_records=3)
    recent.confirmed(run(0, 3))
    recent.confirmed(run(3, 3))  # seqs 0-2 age out of the window
    sink = RedisSink(redis.Redis(port=1), KeySpace("sg"), batch_size=2, recent=recent)
    calls: list[list[int]] = []

    def call(day: str, chain: str, part: list[Sealed], expect: int) -> tuple[bool, int]:
        calls.append([r.seq for r in part])
        if len(calls) == 1:
            raise redis.ConnectionError("gone again")
        return True, part[-1].seq

    sink._call = call  # type: ignore[method-assign]
    with pytest.raises(redis.ConnectionError):
        sink._restore("c", "20261130", -1, 5)  # the server came back empty
    sink._restore("c", "20261130", -1, 5)
    assert (sink.lost, sink.rewritten) == (3, 3)
    assert calls == [[3, 4], [3, 4], [5]]
    assert recent.head("c", "20261130") == 5
