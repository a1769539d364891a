"""What the loader needs from the vector library to check pinned hashes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable


@runtime_checkable
class VectorCatalog(Protocol):
    def content_hash(self, name: str) -> str | None:
        """The content hash of the library's vector `name`, or None if it has none."""
        ...


class MappingCatalog:
    """A catalog from a plain mapping name -> content hash (tests, CLI, simple setups)."""

    def __init__(self, hashes: Mapping[str, str]) -> None:
        self._hashes = dict(hashes)

    def content_hash(self, name: str) -> str | None:
        return self._hashes.get(name)
