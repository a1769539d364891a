"""The background writer: drains the queue, builds and seals records, writes them to Redis,
spills to the local file while Redis is away and replays the file, in order, when it is back."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import redis
from redis.exceptions import RedisClusterException

from steerguard.audit.build import RecordBuilder, RequestItem
from steerguard.audit.chain import ChainHead
from steerguard.audit.sealed import Sealed
from steerguard.audit.sink import RedisSink, Ticket
from steerguard.audit.spill import SpillFile, SpillFull

log = logging.getLogger("steerguard.audit")

# Errors after which a retry can succeed; anything else from Redis (ACL, script) is also
# retried with backoff, since dropping would lose records, but logged loudly.
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, OSError, RedisClusterException)


@dataclass
class AuditCounters:
    queued: int = 0  # records accepted by record()
    written: int = 0  # written to Redis directly
    spilled: int = 0  # written to the spill file
    replayed: int = 0  # moved from the spill file to Redis
    spill_rejected: int = 0  # spill file lines that were not records, kept in <spill>.rejected
    dropped_masking: int = 0  # decision records whose masking failed
    dropped_overflow: int = 0  # records refused by a full queue under `buffer`
    dropped_error: int = 0  # records lost to a bug or an impossible shutdown spill
    refused: int = 0  # record() calls refused under `refuse`/`block`
    write_errors: int = 0  # failed write attempts
    rewritten: int = 0  # records Redis lost after acknowledging them, written again
    lost_by_server: int = 0  # records Redis lost after acknowledging them, beyond rewriting

    @property
    def dropped(self) -> int:
        return self.dropped_masking + self.dropped_overflow + self.dropped_error

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "dropped": self.dropped}


class Writer:
    def __init__(
        self,
        *,
        sink: RedisSink,
        builder: RecordBuilder,
        chain: ChainHead,
        spill: SpillFile,
        checkpoint_path: Path,
        checkpoint_interval_s: float,
        retry_initial_s: float,
        retry_max_s: float,
        revive: Callable[[], object] | None = None,
    ) -> None:
        self.sink = sink
        self.builder = builder
        self.chain = chain
        self.spill = spill
        self.checkpoint_path = checkpoint_path
        self.checkpoint_interval_s = checkpoint_interval_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.revive = revive  # starts the embedded server again if it is gone (see log.py)

        self.queue: deque[RequestItem] = deque()
        self.wake = threading.Event()
        self.cond = threading.Condition()
        self.counters = AuditCounters()
        self.pending: list[Sealed] = []
        self.no_sink = False  # Redis down and the spill refused: hold records in memory
        self.redis_ok = True
        self.last_error: str | None = None
        self._busy = False
        self._stopping = False
        self._next_try = 0.0
        self._delay = retry_initial_s
        self._heads: dict[str, tuple[int, str]] = {}
        self._heads_dirty = False
        self._next_checkpoint = time.monotonic() + checkpoint_interval_s
        self._thread = threading.Thread(target=self._run, name="steerguard-audit", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # ---- state seen by the facade -------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Everything accepted so far is in Redis."""
        return not self.queue and not self.pending and self.spill.empty and not self._busy

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def stop(self, timeout: float) -> None:
        self._stopping = True
        self.wake.set()
        if self.started:
            self._thread.join(timeout)
        else:  # never started (start=False): write or spill what is queued, here
            self._shutdown()

    # ---- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self.wake.wait(self._wait_time())
            self.wake.clear()
            try:
                self._cycle()
            except Exception:  # a bug must not kill the writer; records stay queued
                log.exception("audit writer cycle failed")
                time.sleep(0.1)
            with self.cond:
                self.cond.notify_all()
            if self._stopping:
                self._shutdown()
                with self.cond:
                    self.cond.notify_all()
                return

    def _wait_time(self) -> float:
        if self.queue:
            return 0.0
        if self.pending or not self.spill.empty:
            return max(0.0, self._next_try - time.monotonic())
        return max(0.0, min(1.0, self._next_checkpoint - time.monotonic()))

    def _cycle(self) -> None:
        self._busy = True
        try:
            if time.monotonic() >= self._next_try:
                self._deliver()
            else:  # Redis is down: make new records durable now
                if not self.no_sink:  # with no sink, leave items queued so the bound applies
                    self._seal_queued()
                self._spill_pending()
        finally:
            self._busy = False
        if time.monotonic() >= self._next_checkpoint:
            self.write_checkpoint()

    def _seal_queued(self, limit: int | None = None) -> None:
        """Build and seal queued requests into `pending`: all, or until `limit` records."""
        end = None if limit is None else len(self.pending) + limit
        while self.queue and (end is None or len(self.pending) < end):
            item = self.queue.popleft()
            try:
                drafts, masking_error = self.builder.build(item)
            except Exception:
                log.exception("audit: cannot build records for decision %s",
                              item.decision.decision_id)
                self.counters.dropped_error += len(item.ids)
                continue
            if masking_error is not None:
                log.warning("audit: dropped decision record %s: %s", item.ids[0], masking_error)
                self.counters.dropped_masking += 1
            self.pending.extend(Sealed.seal_request(self.chain, drafts))

    def _deliver(self) -> None:
        try:
            if not self.redis_ok:  # back after a failure: had the server lost anything?
                self.sink.check()
            if not self.spill.empty:
                self._replay()
            if self.pending:  # sealed before (perhaps sent before a failure): one by one
                self._write_pending()
            if not self.no_sink:  # with no sink, leave items queued so the bound applies
                self._stream_queued()
            self.redis_ok, self.no_sink, self.last_error = True, False, None
            self._delay, self._next_try = self.retry_initial_s, 0.0
        except Exception as exc:
            self._failed(exc)
            self._spill_pending()
        finally:
            self._count_rewrites()

    def _count_rewrites(self) -> None:
        """The sink's count of records the server lost (see recent.py), as counters."""
        self.counters.rewritten = self.sink.rewritten
        self.counters.lost_by_server = self.sink.lost

    def _stream_queued(self) -> None:
        """Seal the queue a batch at a time; each batch is sent before the next is sealed and
        its replies are read after, so Redis runs one batch while this thread seals the next.
        Unconfirmed records stay in `pending` (in order) until their replies are read."""
        ticket: Ticket | None = None
        try:
            while True:
                start = len(self.pending)
                self._seal_queued(limit=self.sink.batch_size)
                fresh = self.pending[start:]
                sent = self.sink.send(fresh) if fresh else None
                if ticket is not None:
                    self._settle(ticket)
                    if ticket.redone and sent is not None:
                        # `sent` left before that batch was written again, so Redis refuses
                        # it as out of order: settle it too before sending more, or every
                        # batch after it would be refused the same way.
                        self._settle(sent)
                        sent = None
                if sent is None and not self.queue:
                    break
                ticket = sent
        except BaseException:
            self.sink.reset()
            raise
        self.sink.release()

    def _settle(self, ticket: Ticket) -> None:
        """Read a sent batch's replies; its records, now in Redis, leave `pending`."""
        self.counters.written += ticket.wait()
        self._note_heads(self.pending[: ticket.records])
        del self.pending[: ticket.records]

    def _write_pending(self) -> None:
        """Write `pending` call by call, each reply awaited (idempotent by sequence)."""
        self.sink.write(self.pending, self._count_written)
        self._note_heads(self.pending)
        self.pending = []

    def _replay(self) -> None:
        """Write the spill file's records (this writer's and other writers' of the prefix),
        in order; the file is emptied only once all are in Redis."""
        batch: list[Sealed] = []
        try:
            with self.spill.replaying(Sealed.read) as records:
                for record in records:
                    batch.append(record)
                    if len(batch) >= self.sink.batch_size:
                        self._replay_batch(batch)
                        batch = []
                if batch:
                    self._replay_batch(batch)
        finally:
            self.counters.spill_rejected = self.spill.rejected_lines

    def _replay_batch(self, batch: list[Sealed]) -> None:
        self.sink.write(batch, self._count_replayed)
        self._note_heads(batch)

    def _count_written(self, n: int) -> None:
        self.counters.written += n

    def _count_replayed(self, n: int) -> None:
        self.counters.replayed += n

    def _failed(self, exc: Exception) -> None:
        self.counters.write_errors += 1
        self.redis_ok = False
        self.last_error = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, _TRANSIENT):
            log.error("audit write failed (will retry): %s", self.last_error)
        elif self.revive is not None:
            try:  # the process that had started the shared embedded server has exited
                self.revive()
            except Exception as revive_exc:
                log.error("audit: cannot start the embedded server again: %s", revive_exc)
        self._next_try = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, self.retry_max_s)

    def _spill_pending(self) -> None:
        if not self.pending:
            return
        try:
            self.counters.spilled += self.spill.append((r.hash, r.payload) for r in self.pending)
            self.pending = []
            self.no_sink = False
        except (SpillFull, OSError) as exc:
            if not self.no_sink:
                log.error("audit: Redis unreachable and spill refused: %s", exc)
            self.no_sink = True
        finally:
            self.counters.spill_rejected = self.spill.rejected_lines

    def _note_heads(self, records: list[Sealed]) -> None:
        for r in records:
            self._heads[r.chain] = (r.seq, r.hash)
        self._heads_dirty = True

    def write_checkpoint(self) -> None:
        """Append this writer's confirmed chain heads to the checkpoint file."""
        self._next_checkpoint = time.monotonic() + self.checkpoint_interval_s
        if not self._heads_dirty:
            return
        line = {
            "at": int(time.time() * 1000),
            "source": f"writer:{self.chain.chain_id}",
            "chains": {c: {"seq": s, "hash": h} for c, (s, h) in self._heads.items()},
        }
        try:
            self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.checkpoint_path, "a") as f:
                f.write(json.dumps(line, sort_keys=True) + "\n")
            self._heads_dirty = False
        except OSError as exc:
            log.error("audit: cannot write checkpoint %s: %s", self.checkpoint_path, exc)

    def _shutdown(self) -> None:
        """Last chance: seal what is queued, try Redis once, otherwise spill; never drop
        silently."""
        self._busy = True
        try:
            self.no_sink = False
            self._seal_queued()
            if self.pending and self.redis_ok:
                self._deliver()
            if self.redis_ok and not self.pending:
                try:  # a loss while the writer was idle is otherwise never found
                    self.sink.check()
                except Exception as exc:
                    log.error("audit: cannot compare chain heads with Redis at shutdown: %s",
                              exc)
                finally:
                    self._count_rewrites()
            self._spill_pending()
            if self.pending:
                log.error("audit: %d records lost at shutdown (no Redis, no spill)",
                          len(self.pending))
                self.counters.dropped_error += len(self.pending)
                self.pending = []
        finally:
            self._busy = False
        self.write_checkpoint()
