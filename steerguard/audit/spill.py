"""Local append-only spill file: one `<hash> <canonical json>` line per record, in chain order.
It holds what Redis could not take and is replayed, in order, before anything newer.

Writers of one prefix share the file (several worker processes of one service, with one
home). Every append and every replay holds an exclusive lock on it (flock), so a replay that
empties the file cannot drop lines another writer appended after it had read; whichever
writer replays writes the others' records too (the batch script is idempotent by chain and
seq, so their own later writes skip them).

A line that is not a record (a torn write, changed bytes, a hash that does not match) is
never written to Redis and never dropped: it is moved, byte for byte, to `<file>.rejected`
beside the spill file, logged, and counted; the records before and after it replay."""

from __future__ import annotations

import fcntl
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Generic, TypeVar

from steerguard.audit.chain import record_hash
from steerguard.audit.errors import AuditError

log = logging.getLogger("steerguard.audit")
T = TypeVar("T")
# What a parser of a line's record may raise for bytes that are not one.
_NOT_A_RECORD = (ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError)
_LOGGED = 10  # rejected lines logged one by one per replay; the rest in one summary line


class SpillFull(AuditError):
    """The spill file would grow past spill_max_bytes."""


class SpillFile:
    def __init__(self, path: Path, max_bytes: int, fsync: bool = True) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.rejected_lines = 0  # moved to rejected_path by this process
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
            size = self._cut_torn_tail(fd)
            if size + len(data) > self.max_bytes:
                raise SpillFull(f"spill file {self.path} would exceed {self.max_bytes} bytes")
            try:
                _write_all(fd, data, self.fsync)
            except OSError:
                os.ftruncate(fd, size)  # no half line is left to spoil the next one
                raise
        return data.count(b"\n")

    @property
    def rejected_path(self) -> Path:
        return self.path.with_name(self.path.name + ".rejected")

    @contextmanager
    def replaying(self, parse: Callable[[str, bytes], T]) -> Iterator[Replay[T]]:
        """The file's records, in order, each `parse(hash, payload)`, while appends wait.
        When the block ends without an error, lines that are not records are moved to
        `rejected_path` and the file is emptied; on an error every line stays, for the next
        replay."""
        with self._locked() as fd, open(self.path, "rb") as f:
            replay = Replay(f, parse)
            yield replay
            for _ in replay:  # lines the block did not read (it stopped early) are not lost
                raise AuditError(f"spill replay of {self.path} stopped before the end")
            if replay.rejected:
                self._set_aside(replay.rejected)
            os.ftruncate(fd, 0)
            if self.fsync:
                os.fsync(fd)

    def read(self) -> Iterator[tuple[str, bytes]]:
        """The records' (hash, payload) in order, without the lock (for inspection); lines
        that are not records are skipped here, and set aside by the next replay."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for raw in f:
                checked = _check(raw)
                if isinstance(checked, tuple):
                    yield checked

    def _set_aside(self, lines: list[Rejected]) -> None:
        """Append the lines to the .rejected file (synced before the spill file loses them)."""
        data = b"".join(r.raw + b"\n" for r in lines)
        fd = os.open(self.rejected_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _write_all(fd, data, self.fsync)
        finally:
            os.close(fd)
        self.rejected_lines += len(lines)
        for r in lines[:_LOGGED]:
            log.warning("audit: spill file %s line %d is not a record (%s); moved to %s",
                        self.path, r.line, r.reason, self.rejected_path)
        if len(lines) > _LOGGED:
            log.warning("audit: spill file %s: %d more lines moved to %s", self.path,
                        len(lines) - _LOGGED, self.rejected_path)

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

    def _cut_torn_tail(self, fd: int) -> int:
        """Set aside a last line a crash left unfinished (the next line must not be glued to
        it; its record was never confirmed anywhere); returns the size after."""
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
        number = _count_lines(fd, end) + 1
        self._set_aside([Rejected(number, "a torn last line: a write cut short",
                                  os.pread(fd, size - end, end))])
        os.ftruncate(fd, end)
        return end


@dataclass(frozen=True)
class Rejected:
    """A line of the spill file that is not a record: where, why, and its bytes."""

    line: int
    reason: str
    raw: bytes  # without the newline


class Replay(Generic[T]):
    """Iterates the parsed records of a spill file in order, keeping the lines that are not
    records in `rejected`."""

    def __init__(self, f: BinaryIO, parse: Callable[[str, bytes], T]) -> None:
        self._lines = enumerate(f, start=1)
        self._parse = parse
        self.rejected: list[Rejected] = []

    def __iter__(self) -> Iterator[T]:
        for number, raw in self._lines:
            if raw == b"\n":
                continue  # an empty line holds nothing to keep
            checked = _check(raw)
            if isinstance(checked, str):
                glued = _glued(raw)
                if glued is None:
                    self.rejected.append(Rejected(number, checked, raw.rstrip(b"\n")))
                    continue
                torn, checked = glued
                self.rejected.append(Rejected(
                    number, "a torn line, with the record after it glued on (kept)", torn))
            try:
                record = self._parse(*checked)
            except _NOT_A_RECORD as e:
                self.rejected.append(Rejected(
                    number, f"not an audit record: {type(e).__name__}: {e}"[:200],
                    raw.rstrip(b"\n")))
                continue
            yield record


def _check(raw: bytes) -> tuple[str, bytes] | str:
    """(hash, payload) of a whole line whose hash is its payload's, else what is wrong."""
    if not raw.endswith(b"\n"):
        return "a torn last line: a write cut short"
    digest, sep, payload = raw[:-1].partition(b" ")
    if not sep or not payload:
        return "not '<hash> <record>'"
    text = digest.decode("ascii", "replace")
    if record_hash(payload) != text:
        return "its hash does not match its bytes (changed or torn)"
    return text, payload


_HASH_AT = re.compile(rb"[0-9a-f]{64} ")


def _glued(raw: bytes) -> tuple[bytes, tuple[str, bytes]] | None:
    """A whole record at the end of a bad line (a torn write that the next line was appended
    to, without its newline): (the torn bytes before it, the record)."""
    for m in _HASH_AT.finditer(raw, 1):
        checked = _check(raw[m.start():])
        if isinstance(checked, tuple):
            return raw[:m.start()], checked
    return None


def _write_all(fd: int, data: bytes, fsync: bool) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    if fsync:
        os.fsync(fd)


def _count_lines(fd: int, end: int) -> int:
    count, pos = 0, 0
    while pos < end:
        chunk = os.pread(fd, min(1 << 20, end - pos), pos)
        count += chunk.count(b"\n")
        pos += len(chunk)
    return count
