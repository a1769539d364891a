"""Reading the audit log: queries by index with cursor paging, aggregates, tail, retention."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import hiredis
import orjson
import redis
from pydantic import BaseModel, ConfigDict
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError

from steerguard.audit.build import RecordBuilder
from steerguard.audit.config import AuditConfig
from steerguard.audit.connection import Client, connect, pool_for
from steerguard.audit.embedded import EmbeddedServer
from steerguard.audit.indexes import UNINDEXED_OUTCOME
from steerguard.audit.keys import (
    INDEX_KINDS,
    KeySpace,
    day_of,
    day_start_ms,
    days_between,
    safe_value,
)
from steerguard.audit.masking import Masker
from steerguard.audit.records import DecisionRecord, InterventionRecord, parse_record
from steerguard.audit.verify import VerifyReport, read_day, verify, write_checkpoint

Record = DecisionRecord | InterventionRecord
TimeLike = datetime | int | float | None
# The most selective index drives a query; other filters are checked on the records.
# A decision drives through the day's decision hash, the others through sorted sets.
_DRIVE_ORDER = ("decision", "session", "user", "rule", "vector", "outcome")
_DIRECT_DAYS = 3  # a query over at most this many days skips listing the days present
_SKEW_MS = 60_000  # stream ids are write times; a record's ts is earlier by at most its lag
# What a cluster node says when it no longer (or not yet) serves a slot, and what a node
# that failed does: the cluster client knows how to go on from either.
_REROUTE = (MovedError, AskError, TryAgainError, ClusterDownError, redis.ConnectionError,
            redis.TimeoutError)


class _Reroute(Exception):
    """A direct read of a cluster node failed in a way the cluster client handles."""


def to_ms(value: TimeLike, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    return int(value)


class Page(BaseModel):
    model_config = ConfigDict(frozen=True)

    records: list[Record]
    cursor: str | None  # pass back to get the next page; None when done


class Bucket(BaseModel):
    start: datetime
    decisions: int = 0
    interventions: int = 0
    failed_closed: int = 0  # decisions whose policy failed closed (steering withheld)
    outcomes: dict[str, int] = {}
    rules: dict[str, int] = {}
    vectors: dict[str, int] = {}


class Stats(BaseModel):
    bucket: Literal["hour", "day"]
    buckets: list[Bucket]
    total: Bucket


# Where a page stopped: an index entry (score, member) and the offset of the last record
# returned within its span; resuming yields what comes after it.
Mark = tuple[int, str, int]
_WHOLE = 1 << 30  # an offset past the end of any span: the whole span is done


def _encode_cursor(day: str, mark: Mark) -> str:
    raw = json.dumps([day, *mark]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_cursor(cursor: str) -> tuple[str, Mark]:
    try:
        day, score, member, k = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return str(day), (int(score), str(member), int(k))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cursor {cursor!r} is not one this store issued") from exc


def _span(member: str) -> tuple[str, int]:
    """An index member ("<ms>-<padded seq>:<length>") as a stream id and a record count."""
    first, _, length = member.partition(":")
    ms, _, seq = first.partition("-")
    return f"{ms}-{int(seq)}", int(length or 1)


class AuditStore:
    def __init__(self, client: Client, config: AuditConfig | None = None) -> None:
        self.client = client
        self.config = config or AuditConfig.load()
        self.keys = KeySpace(self.config.key_prefix)
        self._builder: RecordBuilder | None = None
        self._embedded: EmbeddedServer | None = None

    @classmethod
    def from_config(
        cls, config: AuditConfig | None = None, *, read_only: bool = True
    ) -> AuditStore:
        """Connect for queries and verify (`reader_url` when configured), or, with
        `read_only=False`, with `redis_url` for maintenance such as trim."""
        config = config or AuditConfig.load()
        client, embedded = connect(config, read_only=read_only)
        store = cls(client, config)
        store._embedded = embedded
        return store

    def close(self) -> None:
        """Close the connection (and stop an embedded server this store started)."""
        self.client.close()
        if self._embedded is not None:
            self._embedded.stop()

    def user_ref(self, user_id: str) -> str:
        """The reference records carry for `user_id` (needs the same HMAC key as the writer)."""
        if self._builder is None:
            from steerguard.audit.log import hmac_key

            self._builder = RecordBuilder(hmac_key(self.config, create=False), Masker(()),
                                          store_user_id=self.config.store_user_id,
                                          store_text=False)
        return self._builder.user_ref(user_id)

    def days(self) -> list[str]:
        return [d.decode() for d in self.client.zrange(self.keys.days, 0, -1)]

    # ---- query --------------------------------------------------------------------------
    def query(
        self,
        *,
        user: str | None = None,
        user_ref: str | None = None,
        session: str | None = None,
        decision: str | None = None,
        rule: str | None = None,
        vector: str | None = None,
        outcome: str | None = None,
        kind: Literal["decision", "intervention"] | None = None,
        since: TimeLike = None,
        until: TimeLike = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        """Records matching every given filter, oldest first, `limit` per page."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if user is not None:
            user_ref = self.user_ref(user)
        filters = {k: v for k, v in {"decision": decision, "session": session, "user": user_ref,
                                     "rule": rule, "vector": vector, "outcome": outcome}.items()
                   if v is not None}
        lo, hi, wanted = self._days_for(since, until)
        start_day, start = _decode_cursor(cursor) if cursor else (None, None)
        if start_day is not None:
            wanted = [d for d in wanted if d >= start_day]

        out: list[Record] = []
        drive = next((k for k in _DRIVE_ORDER if k in filters
                      and not (k == "outcome" and filters[k] == UNINDEXED_OUTCOME)), None)
        for day in wanted:
            mark = start if day == start_day else None
            if drive is None:
                source = self._scan_stream(day, lo, mark)
            elif drive == "decision":
                source = self._scan_decision(day, filters["decision"], mark)
            else:
                key = self.keys.index(day, drive, filters[drive])
                # Fetch about a page at a time: a fixed 200 fetched and parsed twice the
                # records a 100-record page needs (half the query's time).
                source = self._scan_index(key, day, lo, hi, mark,
                                          chunk=min(max(limit - len(out), 1), 500))
            for here, rec in source:
                if not (lo <= rec.ts <= hi) or not _matches(rec, filters, kind):
                    continue
                out.append(rec)
                if len(out) == limit:
                    return _page(out, _encode_cursor(day, here))
        return _page(out, None)

    def _days_for(self, since: TimeLike, until: TimeLike) -> tuple[int, int, list[str]]:
        """The query's time range in ms and the days to read, oldest first. A range of a
        few days is read day by day without first listing the days present (a round trip
        out of three for a dashboard's query): a missing day's keys read as empty."""
        now = int(time.time() * 1000)
        hi = to_ms(until, now + 86_400_000)
        if since is not None:
            lo = to_ms(since, now)
            span = days_between(lo, hi)
            if len(span) <= _DIRECT_DAYS:
                return lo, hi, span
        days = self.days()
        lo = to_ms(since, day_start_ms(days[0]) if days else now)
        present = set(days)
        return lo, hi, [d for d in days_between(lo, hi) if d in present]

    def iter_records(self, **filters: Any) -> Iterator[Record]:
        cursor = None
        while True:
            page = self.query(limit=500, cursor=cursor, **filters)
            yield from page.records
            if page.cursor is None:
                return
            cursor = page.cursor

    def _scan_decision(self, day: str, decision: str, mark: Mark | None
                       ) -> Iterator[tuple[Mark, Record]]:
        """A decision's records (a handful) from the day's decision hash, in write order."""
        raw = self.client.hget(self.keys.decisions(day), decision)
        if raw is None:  # a day written before decision hashes: a sorted set per decision
            legacy = self.keys.tag(day) + "d:" + safe_value(decision)
            raw = b" ".join(self.client.zrange(legacy, 0, -1))
        score = mark[0] if mark else 0  # a decision's records share one timestamp
        spans = [(score, m, -1) for m in raw.decode().split()]
        yield from self._spans(day, _after(spans, mark))

    def _scan_index(self, key: str, day: str, lo: int, hi: int, mark: Mark | None,
                    chunk: int = 200) -> Iterator[tuple[Mark, Record]]:
        """Index entries with scores in [lo, hi] (or after `mark`), their records in order."""
        at = mark or (lo, "", -1)
        num = chunk
        while True:
            raw = self._zrange(key, at[0], hi, num)
            rows = _after([(sc, m.decode(), -1) for m, sc in raw], at)
            if not rows:
                if len(raw) < num:
                    return
                num *= 2  # more than `num` members share one score: look further
                continue
            yield from self._spans(day, rows, chunk)
            at = (rows[-1][0], rows[-1][1], _WHOLE)  # resume after the last entry read
            if len(raw) < num:
                return
            num = chunk

    def _spans(self, day: str, rows: list[Mark], chunk: int = 100
               ) -> Iterator[tuple[Mark, Record]]:
        """The records of index entries (score, member, offsets to skip), fetched about
        `chunk` records at a time: a consumer that stops early fetched little more."""
        start = 0
        while start < len(rows):
            end, n, spans = start, 0, []
            while end < len(rows) and n < chunk:  # members parsed as needed: often a third
                spans.append(_span(rows[end][1]))
                n += spans[-1][1]
                end += 1
            for (score, member, skip), recs in zip(
                    rows[start:end], self._fetch(day, spans), strict=True):
                for k, rec in enumerate(recs):
                    if k > skip:
                        yield (score or rec.ts, member, k), rec
            start = end

    def _fetch(self, day: str, spans: list[tuple[str, int]]) -> list[list[Record]]:
        """Each span's records (one XRANGE each, in one round trip)."""
        stream = self.keys.stream(day)
        try:
            replies = self._raw([("XRANGE", stream, sid, "+", "COUNT", n) for sid, n in spans],
                                stream)
            payloads = [[_field(fields, b"r") for _, fields in entries] for entries in replies]
        except _Reroute:  # the cluster client follows a moved slot or a failover
            pipe = self.client.pipeline(transaction=False)
            for sid, n in spans:
                pipe.xrange(stream, sid, "+", count=n)
            payloads = [[fields[b"r"] for _, fields in entries] for entries in pipe.execute()]
        return [[parse_record(p) for p in span] for span in payloads]

    def _zrange(self, key: str, lo: int, hi: int, num: int) -> list[tuple[bytes, int]]:
        """Up to `num` (member, score) of an index with scores in [lo, hi], in order."""
        try:
            reply = self._raw(
                [("ZRANGE", key, lo, hi, "BYSCORE", "LIMIT", 0, num, "WITHSCORES")], key)[0]
        except _Reroute:  # the cluster client follows a moved slot or a failover
            return [(m, int(sc)) for m, sc in self.client.zrangebyscore(
                key, lo, hi, start=0, num=num, withscores=True)]
        if reply and isinstance(reply[0], list):  # RESP3: [member, score] pairs
            return [(m, int(sc)) for m, sc in reply]
        return [(m, int(sc)) for m, sc in zip(reply[::2], reply[1::2], strict=True)]

    def _raw(self, commands: list[tuple[str | int, ...]], key: str) -> list[Any]:
        """Commands on `key`'s day, packed by hiredis, sent in one buffer, replies read raw:
        for the small replies of a query, redis-py's pipeline and reply callbacks cost more
        per command than Redis spends answering (and it makes a system call per command of
        a list). On a cluster they go to the node that serves the day (its keys share one
        slot); if that node has lost the slot or failed, _Reroute is raised."""
        if isinstance(self.client, redis.Redis):
            return self._send_raw(self.client.connection_pool, commands)
        try:
            return self._send_raw(pool_for(self.client, key), commands)
        except _REROUTE as exc:
            raise _Reroute(str(exc)) from exc

    @staticmethod
    def _send_raw(pool: redis.ConnectionPool, commands: list[tuple[str | int, ...]]
                  ) -> list[Any]:
        conn = pool.get_connection()
        try:
            conn.send_packed_command([b"".join(hiredis.pack_command(c) for c in commands)])
            return [conn.read_response() for _ in commands]
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _scan_stream(self, day: str, lo: int, mark: Mark | None,
                     chunk: int = 500) -> Iterator[tuple[Mark, Record]]:
        for sid, payload in self._stream_payloads(day, lo, mark[1] if mark else None, chunk):
            rec = parse_record(payload)
            yield (rec.ts, sid, 0), rec

    def _stream_payloads(self, day: str, lo: int, after: str | None, chunk: int = 500
                         ) -> Iterator[tuple[str, bytes]]:
        """(stream id, stored record) of the day's stream from about `lo` on (or after the
        stream id `after`), in stream order."""
        stream = self.keys.stream(day)
        start = f"({after}" if after else (
            str(max(lo - _SKEW_MS, day_start_ms(day))) if lo > day_start_ms(day) else "-")
        while True:
            entries = self.client.xrange(stream, start, "+", count=chunk)
            for sid, fields in entries:
                yield sid.decode(), fields[b"r"]
            if len(entries) < chunk:
                return
            start = "(" + entries[-1][0].decode()

    def export_lines(self, *, since: TimeLike = None, until: TimeLike = None
                     ) -> Iterator[bytes]:
        """Every record in the time range exactly as stored (its canonical JSON, whose SHA-256
        is its hash), in stream order: an export that verify.verify_export can check on its
        own."""
        lo, hi, days = self._days_for(since, until)
        for day in days:
            start = day_start_ms(day)
            inside = lo <= start and start + 86_400_000 <= hi  # the whole day is in range
            for _, payload in self._stream_payloads(day, lo, None):
                if inside or lo <= orjson.loads(payload)["ts"] <= hi:
                    yield payload

    # ---- aggregates ---------------------------------------------------------------------
    def stats(self, *, since: TimeLike = None, until: TimeLike = None,
              bucket: Literal["hour", "day"] = "hour") -> Stats:
        """Counts per outcome, rule and vector in hour (or day) buckets."""
        now = int(time.time() * 1000)
        days = self.days()
        lo = to_ms(since, day_start_ms(days[0]) if days else now)
        hi = to_ms(until, now)
        lo_hour, hi_hour = lo // 3_600_000, hi // 3_600_000
        pipe = self.client.pipeline(transaction=False)
        slots: list[int] = []
        present = set(days)
        for day in days_between(lo, hi):
            if day not in present:
                continue
            base = day_start_ms(day) // 3_600_000
            for h in range(24):
                if lo_hour <= base + h <= hi_hour:
                    pipe.hgetall(self.keys.agg(day, h))
                    slots.append(base + h)
        buckets: dict[int, Bucket] = {}
        total = Bucket(start=datetime.fromtimestamp(lo_hour * 3600, UTC))
        for hour, counts in zip(slots, pipe.execute(), strict=True):
            if not counts:
                continue
            start = hour if bucket == "hour" else hour - hour % 24
            b = buckets.setdefault(start, Bucket(start=datetime.fromtimestamp(start * 3600, UTC)))
            for raw_field, raw_n in counts.items():
                for target in (b, total):
                    _add(target, raw_field.decode(), int(raw_n))
        return Stats(bucket=bucket, buckets=[buckets[k] for k in sorted(buckets)], total=total)

    # ---- tail ---------------------------------------------------------------------------
    def tail(self, n: int = 20) -> list[tuple[str, Record]]:
        """The last `n` records written, oldest first, with their stream ids."""
        out: list[tuple[str, Record]] = []
        for day in reversed(self.days()):
            for sid, fields in self.client.xrevrange(self.keys.stream(day), count=n - len(out)):
                out.append((f"{day}/{sid.decode()}", parse_record(fields[b"r"])))
            if len(out) >= n:
                break
        return list(reversed(out))

    def follow(self, block_ms: int = 1000) -> Iterator[tuple[str, Record]]:
        """New records as they are written (today's stream, rolling over at midnight UTC)."""
        day = day_of(int(time.time() * 1000))
        last = "$"
        while True:
            today = day_of(int(time.time() * 1000))
            if today != day:
                day, last = today, "0-0"
            res = self.client.xread({self.keys.stream(day): last}, block=block_ms, count=100)
            for _, entries in res or []:
                for sid, fields in entries:
                    last = sid.decode()
                    yield f"{day}/{last}", parse_record(fields[b"r"])

    # ---- tamper evidence ----------------------------------------------------------------
    def verify(self, checkpoint_path: Path | None = None) -> VerifyReport:
        """Walk every chain; compare with the checkpoints at the configured path."""
        return verify(self.client, self.keys,
                      checkpoint_path or self.config.resolved_checkpoint_path)

    def checkpoint(self, checkpoint_path: Path | None = None) -> dict[str, Any]:
        """Append current chain heads and stream counters to the checkpoint file."""
        return write_checkpoint(self.client, self.keys,
                                checkpoint_path or self.config.resolved_checkpoint_path)

    # ---- retention ----------------------------------------------------------------------
    def trim(self, retention_days: int | None = None, *, now_ms: int | None = None) -> list[str]:
        """Delete whole days older than the retention (stream, indexes and aggregates
        together), first saving each chain's last trimmed (seq, hash) as its anchor so the
        verifier can tell retention from deletion. Needs an admin user (DEL rights)."""
        keep = retention_days or self.config.retention_days
        now_ms = now_ms or int(time.time() * 1000)
        cutoff = day_of(now_ms - keep * 86_400_000)
        trimmed: list[str] = []
        anchors = {k.decode(): json.loads(v)
                   for k, v in self.client.hgetall(self.keys.anchors).items()}
        for day in self.days():
            if day >= cutoff:
                break
            for entry in read_day(self.client, self.keys, day):
                if entry.chain and entry.seq > anchors.get(entry.chain, {"seq": -1})["seq"]:
                    anchors[entry.chain] = {"seq": entry.seq, "hash": entry.hash, "day": day}
            if anchors:
                self.client.hset(self.keys.anchors,
                                 mapping={c: json.dumps(a) for c, a in anchors.items()})
            self.client.sadd(self.keys.anchors + ":days", day)
            keys = list(self.client.scan_iter(match=self.keys.day_pattern(day), count=1000))
            for i in range(0, len(keys), 500):
                self.client.unlink(*keys[i:i + 500])
            self.client.zrem(self.keys.days, day)
            trimmed.append(day)
        return trimmed


def _page(records: list[Record], cursor: str | None) -> Page:
    """A page of records validated as they were parsed from their stored bytes: not
    validated again (30 us a 100-record page)."""
    return Page.model_construct(records=records, cursor=cursor)


def _after(rows: list[Mark], mark: Mark | None) -> list[Mark]:
    """Index entries (in index order) from `mark` on, each with the offsets it has done."""
    if mark is None:
        return rows
    score, member, k = mark
    out = []
    for row in rows:
        if row[0] == score and row[1] <= member:  # equal scores: ordered by member
            if row[1] == member and k < _WHOLE:
                out.append((row[0], row[1], k))
            continue
        out.append(row)
    return out


def _field(fields: list[bytes], name: bytes) -> bytes:
    """A stream entry's field from its raw [name, value, ...] list."""
    return fields[fields.index(name) + 1]


def _matches(rec: Record, filters: dict[str, str], kind: str | None) -> bool:
    if kind is not None and rec.kind != kind:
        return False
    for k, v in filters.items():
        if k == "decision" and rec.decision_id != v:
            return False
        if k == "session" and rec.session_id != v:
            return False
        if k == "user" and rec.user_ref != v:
            return False
        if k == "outcome" and rec.outcome.status != v:
            return False
        if k == "vector" and not (isinstance(rec, InterventionRecord) and rec.vector == v):
            return False
        if k == "rule":
            rules = ({r.rule_id for r in rec.rules} if isinstance(rec, DecisionRecord)
                     else {rec.rule_id})
            if v not in rules:
                return False
    return True


def _add(b: Bucket, field: str, n: int) -> None:
    kind, _, name = field.partition(":")
    if kind == "n":
        if name == "decision":
            b.decisions += n
        elif name == "failed_closed":
            b.failed_closed += n
        else:
            b.interventions += n
    else:
        target = {"o": b.outcomes, "r": b.rules, "v": b.vectors}[kind]
        target[name] = target.get(name, 0) + n


assert set(_DRIVE_ORDER) == {"decision", *INDEX_KINDS}

