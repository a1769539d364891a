"""Steering vectors in a worker: found on disk by content hash, kept as unit directions."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from steerguard.directions.storage import load_vector
from steerguard.errors import VectorError


def stored_hash(path: Path) -> str | None:
    """The content hash a vector file records in its metadata (None: not a steerguard vector)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("steerguard")
        return json.loads(raw).get("content_hash") if raw else None
    except (SafetensorError, OSError, ValueError, AttributeError):
        return None


class VectorIndex:
    """Which file in `folders` holds the vector of each content hash. Folders are scanned once
    and again on a miss (a vector saved after start-up is found)."""

    def __init__(self, folders: Sequence[Path]) -> None:
        self.folders = tuple(Path(f) for f in folders)
        self._paths: dict[str, Path] = {}
        self._seen: set[Path] = set()
        self._lock = threading.Lock()

    def path(self, content_hash: str) -> Path:
        with self._lock:
            found = self._paths.get(content_hash)
            if found is None:
                self._scan()
                found = self._paths.get(content_hash)
        if found is None:
            where = ", ".join(str(f) for f in self.folders) or "no folder configured"
            raise VectorError(f"no vector with content hash {content_hash} in {where}")
        return found

    def _scan(self) -> None:
        for folder in self.folders:
            for path in sorted(folder.glob("*.safetensors")):
                if path in self._seen:
                    continue
                self._seen.add(path)
                digest = stored_hash(path)
                if digest is not None:
                    self._paths.setdefault(digest, path)


class DirectionTable:
    """Unit directions per vector as one [layers, hidden] tensor (zero rows where the vector has
    no direction), on the model's device and dtype; the most recently used `capacity` vectors
    stay loaded."""

    def __init__(
        self,
        index: VectorIndex,
        *,
        num_layers: int,
        hidden_size: int,
        dtype: torch.dtype,
        device: torch.device,
        capacity: int = 256,
    ) -> None:
        self.index = index
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.dtype, self.device = dtype, device
        self.capacity = capacity
        self._loaded: OrderedDict[str, tuple[torch.Tensor, frozenset[int]]] = OrderedDict()
        self._stacks: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()

    def get(self, content_hash: str) -> tuple[torch.Tensor, frozenset[int]]:
        """([layers, hidden] unit directions, the layers the vector has)."""
        hit = self._loaded.get(content_hash)
        if hit is not None:
            self._loaded.move_to_end(content_hash)
            return hit
        path = self.index.path(content_hash)
        vector = load_vector(path)
        if vector.content_hash() != content_hash:
            raise VectorError(f"{path} holds vector {vector.content_hash()}, not {content_hash}")
        fp = vector.fingerprint
        if (fp.num_layers, fp.hidden_size) != (self.num_layers, self.hidden_size):
            raise VectorError(
                f"vector {vector.name!r} ({path}) is for {fp.num_layers} layers of width "
                f"{fp.hidden_size}; this model has {self.num_layers} of {self.hidden_size}"
            )
        table = torch.zeros(self.num_layers, self.hidden_size)
        for layer in vector.layers:
            table[layer] = vector.unit(layer)
        hit = (table.to(self.device, self.dtype), frozenset(vector.layers))
        self._loaded[content_hash] = hit
        if len(self._loaded) > self.capacity:
            self._loaded.popitem(last=False)
        return hit

    def stack(self, hashes: tuple[str, ...]) -> torch.Tensor:
        """[layers, len(hashes), hidden]: one step's directions, column k = hashes[k]."""
        hit = self._stacks.get(hashes)
        if hit is None:
            hit = torch.stack([self.get(h)[0] for h in hashes], dim=1).contiguous()
            self._stacks[hashes] = hit
            if len(self._stacks) > 64:
                self._stacks.popitem(last=False)
        else:
            self._stacks.move_to_end(hashes)
        return hit
