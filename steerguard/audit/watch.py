"""Continuous oversight of the log: verify records as they arrive, checkpoint, apply retention.

A writer checkpoints only its own chain heads, into a file on its own host: its ACL cannot read
stream counters, and whoever holds its credentials holds that file too. The watcher is the
independent party the threat model needs: it runs with read rights (`reader`, or `auditadmin`
to also trim), walks only the records added since its last pass, checks each one against the
chain head it saw last, compares every day's stream counters with its previous pass (so
`XADD ... MAXLEN 0` or a recreated stream shows up), and appends a checkpoint (heads and
counters) to a file it alone holds, only after a clean pass. Its first pass is a full verify
against the checkpoints already in that file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel

from steerguard.audit.connection import Client
from steerguard.audit.keys import KeySpace
from steerguard.audit.verify import (
    Entry,
    Problem,
    _stream_check,
    _walk,
    read_day,
    sort_chains,
    stream_counters,
    verify,
)


class WatchPass(BaseModel):
    """What one pass saw and did."""

    at: int  # ms
    full: bool  # the first pass: everything verified, against the checkpoint file
    new_records: int
    chains: int
    problems: list[Problem]
    checkpoint_written: bool
    trimmed: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


class LogWatcher:
    def __init__(self, client: Client, keys: KeySpace, checkpoint_path: Path,
                 chunk: int = 2000) -> None:
        self.client = client
        self.keys = keys
        self.checkpoint_path = checkpoint_path
        self.chunk = chunk
        self.heads: dict[str, dict[str, object]] = {}  # chain -> {"seq", "hash"}, verified
        self.cursors: dict[str, str] = {}  # day -> last stream id walked
        self.streams: dict[str, dict[str, int]] = {}  # day -> counters at the last pass
        self._first = True

    def step(self, trim: Callable[[], list[str]] | None = None) -> WatchPass:
        """One pass. `trim` (AuditStore.trim: returns the days it removed) runs first, so
        retention and verification never race."""
        trimmed = trim() if trim is not None else []
        for day in trimmed:
            self.cursors.pop(day, None)
            self.streams.pop(day, None)
        problems: list[Problem] = []
        first = self._first
        if first:  # everything once, against the checkpoints already on file
            problems.extend(verify(self.client, self.keys, self.checkpoint_path).problems)
        anchors = {k.decode(): json.loads(v)
                   for k, v in self.client.hgetall(self.keys.anchors).items()}
        trimmed_days = {d.decode() for d in self.client.smembers(self.keys.anchors + ":days")}
        days = [d.decode() for d in self.client.zrange(self.keys.days, 0, -1)]

        last_ids: dict[str, str] = {}

        def new_entries() -> Iterator[Entry]:
            for day in days:
                for e in self._new_entries(day):
                    last_ids[day] = e.stream_id
                    yield e

        by_chain, n = sort_chains(new_entries(), problems, "entry")
        new_heads: dict[str, dict[str, object]] = {}
        for chain, entries in by_chain.items():
            base = self.heads.get(chain) or anchors.get(chain)
            found = _walk(chain, entries, base)  # type: ignore[arg-type]
            problems.extend(found)
            if not found:
                new_heads[chain] = {"seq": entries[-1].seq, "hash": entries[-1].hash}

        streams: dict[str, dict[str, int]] = {}
        for day in days:
            streams[day] = stream_counters(self.client, self.keys, day)
            if day in self.streams:
                problems.extend(_stream_check(self.client, self.keys, day, self.streams[day], n))
        for day in set(self.streams) - set(days) - trimmed_days:
            problems.append(Problem(kind="truncated", where=day, pos=n,
                                    detail=f"the stream of {day} is gone, not by retention"))

        written = not problems
        if written:  # a failed pass moves nothing: it is walked again next time
            self.heads.update(new_heads)
            self.cursors.update(last_ids)
            self.streams = streams
            self._checkpoint()
            self._first = False
        problems.sort(key=lambda p: p.pos)
        return WatchPass(at=int(time.time() * 1000), full=first, new_records=n,
                         chains=len(self.heads),
                         problems=problems, checkpoint_written=written, trimmed=trimmed)

    def _new_entries(self, day: str) -> list[Entry]:
        """Entries after this day's cursor."""
        return list(read_day(self.client, self.keys, day, self.chunk, self.cursors.get(day)))

    def _checkpoint(self) -> None:
        line = {"at": int(time.time() * 1000), "source": "watch", "chains": self.heads,
                "streams": self.streams, "verified": True}
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.checkpoint_path, "a") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")
