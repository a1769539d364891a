"""What Redis acknowledged lately, kept so that records a server loses after acknowledging
them can be written again.

An acknowledged write is not yet a durable one. With `appendfsync everysec`, Redis postpones
its AOF write for up to two seconds while a background fsync is slow, so a server killed then
comes back without writes it had already answered; a server without persistence comes back
empty; a promoted replica may lack the last writes. The writer learns of it from the day's
head, which the server loses with the records: the next batch names the head it expects, the
script refuses it and says where the head is, and the records after that head are written
again from here, before the batch."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from steerguard.audit.config import REWRITE_WINDOW_RECORDS, REWRITE_WINDOW_S
from steerguard.audit.sealed import Sealed


class _Kept:
    """A confirmed run as two byte strings: the records' objects are freed at once (kept
    objects cost the writer more than the copy: their memory goes cold before it is reused)
    and the rare rewrite parses them back, as a spill file replay does. Canonical JSON holds
    no raw newline, so one separates the records (the spill file's lines rely on it too)."""

    __slots__ = ("_hashes", "_payloads", "chain", "count", "day", "first")

    def __init__(self, run: Sequence[Sealed]) -> None:
        self.chain, self.day, self.first, self.count = (run[0].chain, run[0].day, run[0].seq,
                                                        len(run))
        self._payloads = b"\n".join([r.payload for r in run])
        self._hashes = "\n".join([r.hash for r in run])

    def records(self) -> list[Sealed]:
        return [Sealed.read(h, p) for h, p in
                zip(self._hashes.split("\n"), self._payloads.split(b"\n"), strict=True)]


class RecentWrites:
    """Runs of records Redis confirmed, for `window_s` seconds and at most `max_records`
    records, and each (chain, day)'s first and last confirmed seq (kept after the records
    age out, so that a loss beyond the window can still be counted)."""

    def __init__(self, window_s: float = REWRITE_WINDOW_S,
                 max_records: int = REWRITE_WINDOW_RECORDS) -> None:
        self.window_s = window_s
        self.max_records = max_records
        self._runs: deque[tuple[float, _Kept]] = deque()
        self._records = 0
        self._spans: dict[tuple[str, str], list[int]] = {}  # (chain, day) -> [first, last]

    def confirmed(self, run: Sequence[Sealed]) -> None:
        """`run` (one chain and day, in seq order) is in Redis."""
        now = time.monotonic()
        self._runs.append((now, _Kept(run)))
        self._records += len(run)
        self.set_head(run[-1].chain, run[-1].day, run[-1].seq, first=run[0].seq)
        runs = self._runs
        while runs and (self._records > self.max_records or now - runs[0][0] > self.window_s):
            self._records -= runs.popleft()[1].count

    def set_head(self, chain: str, day: str, seq: int, first: int | None = None) -> None:
        """Redis holds `chain` on `day` up to `seq` (and, if new here, from `first` on)."""
        key = (chain, day)
        span = self._spans.pop(key, None)  # reinserted: the most recently written last
        if len(self._spans) >= 64:  # a chain's old days are not written again
            self._spans = dict(list(self._spans.items())[-32:])
        self._spans[key] = [span[0] if span else seq if first is None else first, seq]

    def head(self, chain: str, day: str) -> int:
        """The last seq of `chain` that Redis confirmed on `day`; -1 if none."""
        span = self._spans.get((chain, day))
        return span[1] if span else -1

    def first(self, chain: str, day: str) -> int:
        """The first seq of `chain` that Redis confirmed on `day` here; -1 if none."""
        span = self._spans.get((chain, day))
        return span[0] if span else -1

    def heads(self) -> list[tuple[str, str, int]]:
        """(chain, day, last confirmed seq) of each chain and day with records kept here.
        Older days are left out: what the server holds of them is long durable, and
        retention may have deleted them on purpose."""
        kept = {(run.chain, run.day): None for _, run in self._runs}  # in order
        return [(chain, day, self._spans[chain, day][1]) for chain, day in kept
                if (chain, day) in self._spans]

    def after(self, chain: str, day: str, seq: int) -> list[Sealed]:
        """The kept records of `chain` on `day` with a seq above `seq`, in order."""
        return [r for _, run in self._runs
                if run.chain == chain and run.day == day and run.first + run.count - 1 > seq
                for r in run.records() if r.seq > seq]
