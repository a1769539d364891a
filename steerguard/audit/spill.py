"""Local append-only spill file: one `<hash> <canonical json>` line per record, in chain order.
It holds what Redis could not take and is replayed, in order, before anything newer.

Writers of one prefix share the file (several worker processes of one service, with one
home). Every append and every replay holds an exclusive lock on it (flock), so a replay that
empties the file cannot drop lines another writer appended after it had read; whichever
writer replays writes the others' records too (the batch script is idempotent by chain and
seq, so their own later writes skip them)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from steerguard.audit.errors import AuditError


class SpillFull(AuditError):
    """The spill file would grow past spill_max_bytes."""


class SpillFile:
    def __init__(self, path: Path, max_bytes: int, fsync: bool = True) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def empty(self) -> bool:
        """No lines, of this writer or another (a stat: the file is shared)."""
        try:
            return self.path.stat().st_size == 0
        except FileNotFoundError:
            return True

    def append(self, lines: Iterable[tuple[str, bytes]]) -> int:
        """Append (hash, payload) lines; raises SpillFull or OSError, writing nothing then."""
        data = b"".join(h.encode() + b" " + p + b"\n" for h, p in lines)
        with self._locked() as fd:
            size = _drop_torn_tail(fd)
            if size + len(data) > self.max_bytes:
                raise SpillFull(f"spill file {self.path} would exceed {self.max_bytes} bytes")
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if self.fsync:
                    os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)  # no half line is left to spoil the next one
                raise
        return data.count(b"\n")

    @contextmanager
    def replaying(self) -> Iterator[Iterator[tuple[str, bytes]]]:
        """The file's lines, in order, while appends wait; emptied when the block ends
        without an error (on an error every line stays, for the next replay)."""
        with self._locked() as fd, open(self.path, "rb") as f:
            yield _lines(f)
            os.ftruncate(fd, 0)
            if self.fsync:
                os.fsync(fd)

    def read(self) -> Iterator[tuple[str, bytes]]:
        """Lines in order, without the lock (for inspection)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            yield from _lines(f)

    @contextmanager
    def _locked(self) -> Iterator[int]:
        """The file (created if missing, readable by its owner only), locked; the lock ends
        with the close."""
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)


def _drop_torn_tail(fd: int) -> int:
    """Cut a last line a crash left unfinished (its record was never confirmed anywhere; the
    next line must not be glued to it); returns the size after."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size  # the usual case: whole lines only
    end = size
    while end > 0:
        chunk = os.pread(fd, min(end, 4096), end - min(end, 4096))
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            end = end - len(chunk) + cut + 1
            break
        end -= len(chunk)
    if end != size:
        os.ftruncate(fd, end)
    return end


def _lines(f: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """(hash, payload) per line; a torn last line (a crash mid-write) is skipped."""
    for line in f:
        if not line.endswith(b"\n"):
            break
        digest, _, payload = line.rstrip(b"\n").partition(b" ")
        if payload:
            yield digest.decode(), payload
