"""What the audit API and the dashboard read, over one AuditStore: queries with limits, a
decision with its interventions, stats, range verification, the chain verdict kept fresh by a
background check, the last `audit watch` pass, exports and new records as they arrive."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

import redis
from pydantic import BaseModel
from redis.exceptions import RedisClusterException

from steerguard.audit.errors import AuditConfigError
from steerguard.audit.keys import day_of, day_start_ms, days_between
from steerguard.audit.records import DecisionRecord, InterventionRecord, parse_record
from steerguard.audit.store import AuditStore, Page, Stats
from steerguard.audit.verify import Problem, verify_days
from steerguard.audit.watch import LogWatcher
from steerguard.oversight.params import Limits, RecordFilters, StatsQuery, TimeRange
from steerguard.oversight.problems import OversightProblem, bad_request, unavailable
from steerguard.oversight.rows import csv_lines

log = logging.getLogger(__name__)
Record = DecisionRecord | InterventionRecord
T = TypeVar("T")
STORE_ERRORS = (redis.RedisError, RedisClusterException, OSError)
_DECISION_RECORDS = 1000  # a decision has one record per intervention: a handful


class Verdict(BaseModel):
    """The whole log's chain verdict as the last background check found it."""

    state: Literal["pending", "ok", "failed", "unavailable"]
    checked_at: datetime | None = None
    seconds: float | None = None  # how long that check took
    full: bool = True  # that check walked every record (else the new ones)
    full_at: datetime | None = None  # the last check that walked every record
    records: int = 0
    chains: int = 0
    problems: int = 0
    first: Problem | None = None
    detail: str = ""


class WatchInfo(BaseModel):
    """The last clean pass of `audit watch` (a failed pass writes no checkpoint)."""

    checkpoint: str
    last_pass_at: datetime | None = None
    full: bool | None = None
    chains: int | None = None


class RangeVerdict(BaseModel):
    since: datetime
    until: datetime
    days: list[str]
    ok: bool
    records: int
    chains: int
    problems: list[Problem]
    first: Problem | None
    watch: WatchInfo
    monitor: Verdict


class DecisionView(BaseModel):
    decision: DecisionRecord | None
    interventions: list[InterventionRecord]


def _guard(what: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except STORE_ERRORS as exc:
        raise unavailable(f"{what}: Redis: {type(exc).__name__}: {exc}") from None


class OversightService:
    def __init__(self, store: AuditStore, *, limits: Limits | None = None,
                 verify_interval_s: float | None = 10.0,
                 full_verify_interval_s: float = 3600.0,
                 watch_checkpoint: Path | None = None) -> None:
        """The background check walks every record first and every `full_verify_interval_s`
        after that; in between, every `verify_interval_s`, the records added since (as `audit
        watch` does: chain heads and stream counters). None: no background check.
        `watch_checkpoint`: the file `audit watch` appends to (read, never written)."""
        self.store = store
        self.full_verify_interval_s = full_verify_interval_s
        self._watcher: _ReadOnlyWatcher | None = None
        self._full_started = 0.0
        self.limits = limits or Limits()
        self.watch_checkpoint = watch_checkpoint or store.config.resolved_checkpoint_path
        self._verdict = Verdict(state="pending")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch_cache: tuple[tuple[int, int], WatchInfo] | None = None
        if verify_interval_s is not None:
            self._thread = threading.Thread(target=self._monitor, args=(verify_interval_s,),
                                            name="oversight-verify", daemon=True)
            self._thread.start()

    @property
    def prefix(self) -> str:
        return self.store.config.key_prefix

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # ---- queries -----------------------------------------------------------------------
    def records(self, f: RecordFilters) -> Page:
        if f.limit > self.limits.max_limit:
            raise bad_request("limit", f"at most {self.limits.max_limit} records per page, "
                              f"not {f.limit}")
        since, until = self._range(f, self.limits.max_range_days)

        def run() -> Page:
            try:
                return self.store.query(**f.query_args(), since=since, until=until,  # type: ignore[arg-type]
                                        limit=f.limit, cursor=f.cursor)
            except AuditConfigError as exc:
                raise bad_request("user", f"cannot be turned into its keyed reference here "
                                  f"({exc}); filter by user_ref instead") from None
            except ValueError as exc:
                raise bad_request("cursor", str(exc)) from None

        return _guard("records", run)

    def latest(self, n: int) -> list[Record]:
        """The last `n` records written, newest first."""
        return [rec for _, rec in reversed(_guard("records", lambda: self.store.tail(n)))]

    def _decision_day(self, decision_id: str) -> str | None:
        """The day whose decision hash holds `decision_id`: one round trip for every day
        (the store would ask day after day)."""
        days = self.store.days()
        pipe = self.store.client.pipeline(transaction=False)
        for day in days:
            pipe.hexists(self.store.keys.decisions(day), decision_id)
        found = [day for day, hit in zip(days, pipe.execute(), strict=True) if hit]
        return found[0] if found else None

    def decision(self, decision_id: str) -> DecisionView:
        def run() -> Page:
            day = self._decision_day(decision_id)
            if day is None:  # a day written before decision hashes: the store finds it
                return self.store.query(decision=decision_id, limit=_DECISION_RECORDS)
            start = day_start_ms(day)
            return self.store.query(decision=decision_id, since=start,
                                    until=start + 86_400_000 - 1, limit=_DECISION_RECORDS)

        page = _guard("decision", run)
        view = DecisionView(decision=None, interventions=[])
        for rec in page.records:
            if isinstance(rec, DecisionRecord):
                view.decision = rec
            else:
                view.interventions.append(rec)
        view.interventions.sort(key=lambda r: r.index)
        if view.decision is None and not view.interventions:
            raise OversightProblem(404, "Not found",
                                   f"decision_id: no records of decision {decision_id!r}",
                                   field="decision_id")
        return view

    def stats(self, q: StatsQuery) -> Stats:
        since, until = self._range(q, self.limits.max_range_days,
                                   default_days=1 if q.bucket == "hour" else 7)
        return _guard("stats", lambda: self.store.stats(since=since, until=until,
                                                        bucket=q.bucket))

    def _range(self, q: TimeRange, max_days: int, default_days: int | None = None
               ) -> tuple[datetime, datetime]:
        try:
            return q.bounded(max_days, default_days)
        except ValueError as exc:
            raise bad_request("since", str(exc)) from None

    # ---- verification ------------------------------------------------------------------
    def verify_range(self, q: TimeRange) -> RangeVerdict:
        since, until = self._range(q, self.limits.verify_max_days, default_days=1)
        days = days_between(int(since.timestamp() * 1000), int(until.timestamp() * 1000))
        report = _guard("verify", lambda: verify_days(self.store.client, self.store.keys, days))
        return RangeVerdict(since=since, until=until, days=days, ok=report.ok,
                            records=report.records, chains=report.chains,
                            problems=report.problems[:20], first=report.first,
                            watch=self.watch(), monitor=self.verdict())

    def verdict(self) -> Verdict:
        return self._verdict

    def check_now(self, full: bool = True) -> Verdict:
        """One background check now, in the caller's thread: the whole log (against the
        configured checkpoints), or, with `full=False` after a full one, the records added
        since the last clean check."""
        started = time.perf_counter()
        if full or self._watcher is None:
            self._watcher = _ReadOnlyWatcher(self.store.client, self.store.keys,
                                             self.store.config.resolved_checkpoint_path)
            self._full_started = time.monotonic()
        previous = self._verdict
        try:
            result = self._watcher.step()
        except STORE_ERRORS as exc:
            self._watcher = None  # start again from a full check
            v = Verdict(state="unavailable", checked_at=datetime.now(UTC),
                        detail=f"Redis: {type(exc).__name__}: {exc}")
        else:
            now = datetime.now(UTC)
            total = result.new_records + (0 if result.full else previous.records)
            v = Verdict(state="ok" if result.ok else "failed", checked_at=now,
                        seconds=round(time.perf_counter() - started, 3), full=result.full,
                        full_at=now if result.full else previous.full_at,
                        records=total, chains=result.chains,
                        problems=len(result.problems),
                        first=result.problems[0] if result.problems else None)
            if not result.ok:
                self._watcher = None  # a failed check is repeated in full
        self._verdict = v
        return v

    def refresh(self) -> None:
        """Start the next background check now."""
        self._wake.set()

    def _monitor(self, interval: float) -> None:
        while not self._stop.is_set():
            full = (self._watcher is None or time.monotonic() - self._full_started
                    >= self.full_verify_interval_s)
            try:
                self.check_now(full=full)
            except Exception as exc:  # the dashboard shows it; the thread must live on
                log.exception("oversight verify pass failed")
                self._watcher = None
                self._verdict = Verdict(state="unavailable", checked_at=datetime.now(UTC),
                                        detail=f"{type(exc).__name__}: {exc}")
            self._wake.wait(interval)
            self._wake.clear()

    def watch(self) -> WatchInfo:
        """The last `audit watch` pass, from the tail of its checkpoint file."""
        path = self.watch_checkpoint
        info = WatchInfo(checkpoint=str(path))
        try:
            st = os.stat(path)
        except OSError:
            return info
        stamp = (st.st_mtime_ns, st.st_size)
        if self._watch_cache and self._watch_cache[0] == stamp:
            return self._watch_cache[1]
        try:
            with open(path, "rb") as f:
                f.seek(max(0, st.st_size - (1 << 20)))  # a line holds every chain head
                lines = f.read().splitlines()
        except OSError:
            return info
        for line in reversed(lines):
            try:
                cp = json.loads(line)
            except ValueError:
                continue
            if isinstance(cp, dict) and cp.get("source") == "watch" and isinstance(
                    cp.get("at"), int):
                info = WatchInfo(checkpoint=str(path),
                                 last_pass_at=datetime.fromtimestamp(cp["at"] / 1000, UTC),
                                 chains=len(cp.get("chains") or {}))
                break
        self._watch_cache = (stamp, info)
        return info

    # ---- export ------------------------------------------------------------------------
    def export(self, q: TimeRange, fmt: Literal["jsonl", "csv"]) -> Iterator[bytes]:
        """The records of the range, JSONL exactly as stored (each line's SHA-256 is its
        hash, so `audit verify --file` checks a download) or CSV. The first chunk is read
        before this returns, so an unreachable store is a 503, not a cut-off body."""
        since, until = self._range(q, self.limits.max_range_days)
        if fmt == "jsonl":
            body: Iterator[bytes] = (line + b"\n" for line in
                                     self.store.export_lines(since=since, until=until))
        else:
            body = csv_lines(self.store.iter_records(since=since, until=until))
        first = _guard("export", lambda: next(body, None))
        return _chain_first(first, body)

    # ---- live --------------------------------------------------------------------------
    def live_start(self, last_event_id: str | None) -> str:
        """Where a live feed starts: after `last_event_id` ("day/stream-id") when it is one
        of today's, else after the newest record now."""
        today = day_of(int(time.time() * 1000))
        if last_event_id:
            day, _, sid = last_event_id.partition("/")
            if day == today and _stream_id(sid):
                return last_event_id
        newest = _guard("live", lambda: self.store.client.xrevrange(
            self.store.keys.stream(today), count=1))
        return f"{today}/{newest[0][0].decode() if newest else '0-0'}"

    def live_read(self, position: str, block_ms: int = 1000, count: int = 100
                  ) -> tuple[str, list[tuple[str, Record]]]:
        """Records after `position` (as the store's follow reads them: today's stream,
        rolling over at midnight UTC), waiting up to `block_ms` for the first."""
        day, _, last = position.partition("/")
        today = day_of(int(time.time() * 1000))
        if today != day:
            day, last = today, "0-0"
        res = self.store.client.xread({self.store.keys.stream(day): last}, block=block_ms,
                                      count=count)
        out: list[tuple[str, Record]] = []
        for _, entries in res or []:
            for sid, fields in entries:
                last = sid.decode()
                out.append((f"{day}/{last}", parse_record(fields[b"r"])))
        return f"{day}/{last}", out


class _ReadOnlyWatcher(LogWatcher):
    """`audit watch`'s pass without its checkpoint: the first pass verifies everything
    against the checkpoints on file, later ones the new records; the file is only read (it
    is the watcher's, kept out of the servers' reach)."""

    def _checkpoint(self) -> None:
        return None


def _chain_first(first: bytes | None, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first is not None:
        yield first
        yield from rest


def _stream_id(sid: str) -> bool:
    ms, _, seq = sid.partition("-")
    return ms.isdigit() and seq.isdigit()


def hours_ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)
