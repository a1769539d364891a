"""Local append-only spill file: one `<hash> <canonical json>` line per record, in chain order.
It holds what Redis could not take and is replayed, in order, before anything newer."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from steerguard.audit.errors import AuditError


class SpillFull(AuditError):
    """The spill file would grow past spill_max_bytes."""


class SpillFile:
    def __init__(self, path: Path, max_bytes: int, fsync: bool = True) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        self._size = path.stat().st_size if path.exists() else 0

    @property
    def empty(self) -> bool:
        return self._size == 0

    def append(self, lines: Iterable[tuple[str, bytes]]) -> int:
        """Append (hash, payload) lines; raises SpillFull or OSError, writing nothing then."""
        data = b"".join(h.encode() + b" " + p + b"\n" for h, p in lines)
        if self._size + len(data) > self.max_bytes:
            raise SpillFull(f"spill file {self.path} would exceed {self.max_bytes} bytes")
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        self._size += len(data)
        return data.count(b"\n")

    def read(self) -> Iterator[tuple[str, bytes]]:
        """Lines in order; a torn last line (crash mid-write) is skipped."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                digest, _, payload = line.rstrip(b"\n").partition(b" ")
                if payload:
                    yield digest.decode(), payload

    def clear(self) -> None:
        with open(self.path, "r+b") as f:
            f.truncate(0)
            if self.fsync:
                os.fsync(f.fileno())
        self._size = 0
