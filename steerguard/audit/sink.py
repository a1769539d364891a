"""Writes sealed records to Redis: runs of (chain, day) become one script call each.

`write` waits for each reply. `send` pipelines: it puts a batch's commands on connections of
its own (one per node on a cluster: a day's keys all live on one) and returns a Ticket whose
replies are read later, so the writer seals the next batch while Redis runs this one (the two
overlap on two cores)."""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis

from steerguard.audit.connection import Client, pool_for
from steerguard.audit.keys import KeySpace
from steerguard.audit.lua import WRITE_BATCH
from steerguard.audit.recent import RecentWrites
from steerguard.audit.sealed import Sealed

log = logging.getLogger("steerguard.audit")


def runs(records: Sequence[Sealed], limit: int) -> list[list[Sealed]]:
    """Split into consecutive runs of one (chain, day) and consecutive seqs (the script sets
    the head to the run's first seq + its length - 1), at most `limit` long. A gap comes from
    a spill file line set aside as damaged."""
    out: list[list[Sealed]] = []
    for rec in records:
        cur = out[-1] if out else None
        if (cur and len(cur) < limit and cur[0].chain == rec.chain and cur[0].day == rec.day
                and cur[-1].seq + 1 == rec.seq):
            cur.append(rec)
        else:
            out.append([rec])
    return out


class Ticket:
    """Replies of one sent batch, read in send order; `wait` returns how many records were new."""

    def __init__(self, sink: RedisSink, sent: list[tuple[list[Sealed], Any]]) -> None:
        self.sink = sink
        self.sent = sent  # (run, the connection its script call went out on)
        self.records = sum(len(run) for run, _ in sent)
        self.redone = 0  # runs that wait() had to write again the careful way

    def wait(self) -> int:
        redo: list[list[Sealed]] = []
        new = 0
        try:
            for run, conn in self.sent:
                try:
                    ok, _ = conn.read_response()
                except redis.ResponseError:  # no script after a restart, a moved slot...
                    ok = 0  # the call wrote nothing (on a cluster the probes come first)
                if ok:
                    new += len(run)
                    self.sink.recent.confirmed(run)
                else:
                    redo.append(run)
        except BaseException:
            self.sink.reset()
            raise
        # Refused (out of order behind a failed run) or failed: write them the careful way
        # now that every earlier batch is settled; that path loads the script and follows
        # redirects, or raises.
        for run in redo:
            new += self.sink._write_run(run)
        self.redone = len(redo)
        return new


class RedisSink:
    def __init__(self, client: Client, keys: KeySpace, batch_size: int,
                 recent: RecentWrites | None = None) -> None:
        self.client = client
        self.keys = keys
        self.batch_size = batch_size
        self.recent = recent or RecentWrites()
        self.rewritten = 0  # records the server lost after acknowledging them, written again
        self.lost = 0  # ... that were no longer kept in `recent`: gone
        self._gaps: set[tuple[str, str, int]] = set()  # (chain, day, first seq) counted lost
        self.cluster = not isinstance(client, redis.Redis)
        self._sha = hashlib.sha1(WRITE_BATCH.encode()).hexdigest()
        self._known_days: set[str] = set()
        # pipelining connections, held while tickets are open: id(pool) -> (pool, connection)
        self._conns: dict[int, tuple[Any, Any]] = {}
        self._sent_heads: dict[tuple[str, str], int] = {}  # (chain, day) -> last seq sent

    def send(self, records: Sequence[Sealed]) -> Ticket:
        """Send all records without waiting; settle with Ticket.wait(), tickets in send order.
        A run that follows an earlier one of its chain and day names that run's last seq, so
        it cannot land if the earlier one did not. On an error the caller resends everything
        unconfirmed with write(), which is idempotent."""
        todo = runs(records, max(len(records), 1))  # the caller sized the batch
        for day in sorted({run[0].day for run in todo}):
            self._note_day(day)
        sent: list[tuple[list[Sealed], Any]] = []
        buffers: dict[int, tuple[Any, list[bytes]]] = {}
        try:
            for run in todo:
                day, chain = run[0].day, run[0].chain
                # the head this run follows: the run sent before it, else the last one
                # confirmed (a server that lost records since refuses it: see recent.py)
                expect = self._sent_heads.get((chain, day))
                if expect is None:
                    expect = self.recent.head(chain, day)
                argv = self._argv(self.keys.tag(day), chain, run, expect, probe=self.cluster)
                conn = self._connection(self.keys.head(day))
                # hiredis packs the call in C; redis-py's send_command re-encodes every
                # argument in Python first (16% of the writer's rate)
                buffers.setdefault(id(conn), (conn, []))[1].append(hiredis.pack_command(
                    ("EVALSHA", self._sha, 1, self.keys.head(day), *argv)))
                sent.append((run, conn))
                self._sent_heads[(chain, day)] = run[-1].seq
            for conn, packed in buffers.values():
                # one buffer per connection: given a list, redis-py makes a system call per item
                conn.send_packed_command([b"".join(packed)], check_health=False)
        except BaseException:
            self.reset()
            raise
        return Ticket(self, sent)

    def _connection(self, key: str) -> Any:
        """The held connection to the node that serves `key` (the only one, single server)."""
        pool = pool_for(self.client, key)
        held = self._conns.get(id(pool))
        if held is None:
            held = self._conns[id(pool)] = (pool, pool.get_connection())
        return held[1]

    def release(self) -> None:
        """Every ticket is settled: hand the connections back to their pools."""
        for pool, conn in self._conns.values():
            pool.release(conn)
        self._conns.clear()
        self._sent_heads.clear()

    def reset(self) -> None:
        """Forget the pipelining connections (their unread replies) and what was sent."""
        for pool, conn in self._conns.values():
            conn.disconnect()
            pool.release(conn)
        self._conns.clear()
        self._sent_heads.clear()
        self._known_days.clear()

    def write(self, records: Sequence[Sealed],
              landed: Callable[[int], None] | None = None) -> int:
        """Write all records; returns how many were new (not already there). Raises redis errors
        with nothing lost: a retry of the same records is idempotent, and finds the runs that
        landed before the error already there, so `landed(n)` hears each run as it lands."""
        new = 0
        for run in runs(records, self.batch_size):
            n = self._write_run(run)
            new += n
            if landed is not None:
                landed(n)
        return new

    def _write_run(self, run: list[Sealed]) -> int:
        """Write one run, after the head confirmed before it: the records the server has
        lost since are written again first. Returns how many of `run` were new."""
        day, chain = run[0].day, run[0].chain
        for _ in range(4):
            expect = self.recent.head(chain, day)
            ok, head = self._call(day, chain, run, expect)
            if ok:
                self.recent.confirmed(run)
                return len(run)
            if head < expect:  # the server lost records it had acknowledged
                self._restore(chain, day, head, expect)
                continue
            # Redis is ahead: an earlier call wrote some of these but its reply was lost
            landed = [r for r in run if r.seq <= head]
            if landed:
                self.recent.confirmed(landed)
            else:
                self.recent.set_head(chain, day, head)
            run = run[len(landed):]
            if not run:
                return 0
        raise redis.ResponseError(f"chain {chain} day {day}: head {head} moved during write")

    def check(self) -> None:
        """Compare each day's head in Redis with the last one it confirmed here, and write
        again what the server lost (after a reconnect, and at shutdown: a loss is otherwise
        found by the next write of that chain and day)."""
        for chain, day, ours in self.recent.heads():
            theirs = self.client.hget(self.keys.head(day), chain)
            head = int(theirs) if theirs is not None else -1
            if head < ours:
                self._restore(chain, day, head, ours)

    def _restore(self, chain: str, day: str, head: int, last: int) -> None:
        """The server holds `chain` on `day` up to `head`, not `last` as it had confirmed:
        write the kept records in between again, in order, and count the rest lost."""
        self._known_days.clear()  # the days list may be as old as the records: note it again
        kept = [r for r in self.recent.after(chain, day, head) if r.seq <= last]
        start = max(head + 1, self.recent.first(chain, day))
        gone = (kept[0].seq if kept else last + 1) - start
        if gone > 0 and (chain, day, start) not in self._gaps:  # a retry finds the same gap
            self._gaps.add((chain, day, start))
            self.lost += gone
            log.error("audit: Redis lost %d records of chain %s on %s (seq %d to %d) after "
                      "acknowledging them, and they are no longer kept to write again; "
                      "verify will report them missing", gone, chain, day, start,
                      start + gone - 1)
        for i in range(0, len(kept), self.batch_size):
            part = kept[i:i + self.batch_size]
            ok, now = self._call(day, chain, part, -1)
            if not ok:
                raise redis.ResponseError(f"chain {chain} day {day}: head {now} moved while "
                                          "writing lost records again")
            self.rewritten += len(part)
        if kept:
            log.warning("audit: Redis lost %d records of chain %s on %s after acknowledging "
                        "them; written again", len(kept), chain, day)
        self.recent.set_head(chain, day, kept[-1].seq if kept else head)

    def _call(self, day: str, chain: str, run: list[Sealed], expect: int
              ) -> tuple[bool, int]:
        self._note_day(day)
        argv = self._argv(self.keys.tag(day), chain, run, expect, probe=self.cluster)
        try:
            ok, head = self.client.evalsha(self._sha, 1, self.keys.head(day), *argv)
        except redis.exceptions.NoScriptError:
            self.client.script_load(WRITE_BATCH)
            return self._call(day, chain, run, expect)
        return bool(ok), int(head)

    def _note_day(self, day: str) -> None:
        """Add `day` to the days present, once per day and connection: `days` has no hash
        tag (on a cluster it may live on another node); the ZADD is idempotent."""
        if day not in self._known_days:
            self.client.zadd(self.keys.days, {day: int(day)})
            self._known_days.add(day)

    @staticmethod
    def _argv(tag: str, chain: str, run: list[Sealed], expect: int, *, probe: bool
              ) -> list[Any]:
        argv: list[Any] = [tag, chain, run[0].seq, len(run), expect, int(probe)]
        groups: dict[str, list[int]] = defaultdict(list)  # name -> position, length, ...
        decisions: dict[str, list[int]] = defaultdict(list)
        counts: dict[str, int] = defaultdict(int)
        for pos, rec in enumerate(run, start=1):
            argv += (rec.payload, rec.hash, rec.ts)
            for spans in (*(groups[s] for s in rec.indexes), decisions[rec.decision]):
                if spans and spans[-2] + spans[-1] == pos:  # extends the span before it
                    spans[-1] += 1
                else:
                    spans += (pos, 1)
            for agg in rec.aggs:
                counts[agg] += 1
        for section in (groups, decisions):
            argv.append(len(section))
            for name, spans in section.items():
                argv += (name, len(spans) // 2, *spans)
        argv.append(len(counts))
        for agg, n in counts.items():
            hash_suffix, _, field = agg.partition("\0")
            argv += (hash_suffix, field, n)
        return argv
