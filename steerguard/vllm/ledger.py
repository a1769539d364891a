"""Measurements and reads of one request, kept in the worker until the sender takes them.

Steps store raw per-position values (projections before and after, the size of each
ablate/clamp shift) as device tensors; nothing is reduced or synced until `take`, which also
drops the positions past the sender's cutoff (a step that ran after the request's last token,
whose output vLLM discarded).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from steerguard.runtime.plan import Operation
from steerguard.runtime.report import LayerMeasurement
from steerguard.vllm.rows import RowPlan, scope_mask


class ReadValues(BaseModel):
    """What one read returned at one layer: one value (norm) or vector (state) per position."""

    model_config = ConfigDict(frozen=True)

    read: int
    layer: int
    positions: tuple[int, ...]
    values: list[float] | list[list[float]]


class WorkerReport(BaseModel):
    """A request's measurements (per intervention, per layer, in the plan's order) and reads."""

    model_config = ConfigDict(frozen=True)

    error: str | None = None
    interventions: list[list[LayerMeasurement]] = []
    reads: list[ReadValues] = []

    @classmethod
    def merge(cls, reports: list[WorkerReport]) -> WorkerReport:
        """Join the reports of all workers: pipeline stages each measured their own layers,
        tensor-parallel ranks the same ones."""
        interventions: list[dict[int, LayerMeasurement]] = []
        reads: dict[tuple[int, int], ReadValues] = {}
        for report in reports:
            for i, layers in enumerate(report.interventions):
                if i == len(interventions):
                    interventions.append({})
                interventions[i].update({m.layer: m for m in layers})
            reads.update({(r.read, r.layer): r for r in report.reads})
        return cls(
            error=next((r.error for r in reports if r.error), None),
            interventions=[[by[k] for k in sorted(by)] for by in interventions],
            reads=[reads[k] for k in sorted(reads)],
        )


@dataclass
class _Chunk:
    first: int
    before: torch.Tensor  # [n, E]
    after: torch.Tensor
    moved: torch.Tensor

    @property
    def end(self) -> int:
        return self.first + self.before.shape[0]

    def cut(self, end: int) -> _Chunk:
        n = end - self.first
        return _Chunk(self.first, self.before[:n], self.after[:n], self.moved[:n])


@dataclass
class Ledger:
    plan: RowPlan | None
    prompt_len: int
    local_layers: frozenset[int] | None = None  # a pipeline stage's layers (None: all)
    error: str | None = None
    closed: bool = False
    chunks: list[_Chunk] = field(default_factory=list)
    reads: dict[tuple[int, int], dict[int, torch.Tensor]] = field(default_factory=dict)

    def rewind(self, first: int) -> None:
        """A step starts at position `first`: forget what was kept from there on (a request
        preempted and recomputed runs its positions again)."""
        while self.chunks and self.chunks[-1].end > first:
            last = self.chunks.pop()
            if last.first < first:
                self.chunks.append(last.cut(first))
                break

    def add(self, first: int, before: torch.Tensor, after: torch.Tensor, moved: torch.Tensor
            ) -> None:
        if not self.closed:
            self.chunks.append(_Chunk(first, before, after, moved))

    def add_read(self, read: int, layer: int, positions: np.ndarray, values: torch.Tensor
                 ) -> None:
        if self.closed:
            return
        kept = self.reads.setdefault((read, layer), {})
        for k, position in enumerate(positions.tolist()):
            kept[position] = values[k]

    def take(self, cutoff: int) -> WorkerReport:
        """Reduce what was kept at positions < `cutoff` into a report, and close the ledger."""
        self.closed = True
        if self.error is not None:
            return WorkerReport(error=self.error)
        return WorkerReport(
            interventions=self._measurements(cutoff), reads=self._read_values(cutoff)
        )

    def _measurements(self, cutoff: int) -> list[list[LayerMeasurement]]:
        plan = self.plan
        if plan is None or not plan.hashes:
            return []
        chunks = [c if c.end <= cutoff else c.cut(cutoff) for c in self.chunks if c.first < cutoff]
        entries = len(plan.entry_i)
        if chunks:
            before = torch.cat([c.before for c in chunks]).float().cpu()
            after = torch.cat([c.after for c in chunks]).float().cpu()
            moved = torch.cat([c.moved for c in chunks]).float().cpu()
            positions = np.concatenate([np.arange(c.first, c.end) for c in chunks])
        else:
            before = after = moved = torch.zeros(0, entries)
            positions = np.zeros(0, dtype=np.int64)
        masks = np.stack(
            [scope_mask(positions, self.prompt_len, s) for s in plan.scopes], axis=1
        )  # [N, I]
        mask = torch.from_numpy(masks[:, plan.entry_i].astype(np.float32))  # [N, E]
        count = mask.sum(0)
        safe = count.clamp(min=1.0)
        proj_before = ((before * mask).sum(0) / safe).tolist()
        proj_after = ((after * mask).sum(0) / safe).tolist()
        shifted = ((moved * mask).sum(0) / safe).tolist()
        counts = count.tolist()
        out: list[list[LayerMeasurement]] = [[] for _ in plan.hashes]
        for e in range(entries):
            i, layer = int(plan.entry_i[e]), int(plan.entry_l[e])
            if self.local_layers is not None and layer not in self.local_layers:
                continue
            n = int(counts[e])
            if n == 0:
                delta = pb = pa = 0.0
            else:
                pb, pa = proj_before[e], proj_after[e]
                add = plan.ops[i] is Operation.ADD
                delta = abs(float(plan.coefficients[i, layer])) if add else shifted[e]
            out[i].append(
                LayerMeasurement(
                    layer=layer,
                    positions_affected=n,
                    delta_norm=delta,
                    projection_before=pb,
                    projection_after=pa,
                )
            )
        return out

    def _read_values(self, cutoff: int) -> list[ReadValues]:
        out = []
        for (read, layer), kept in sorted(self.reads.items()):
            positions = tuple(p for p in sorted(kept) if p < cutoff)
            if not positions:
                continue
            values = torch.stack([kept[p] for p in positions]).float().cpu()
            out.append(
                ReadValues(read=read, layer=layer, positions=positions, values=values.tolist())
            )
        return out
