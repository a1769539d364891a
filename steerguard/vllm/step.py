"""One forward step of vLLM's flattened token batch, with per-row plans.

vLLM lays the step's tokens out row after row: row r owns tokens [start, start + count) at
request positions first, first + 1, ... A Llama-family decoder layer returns (hidden, residual)
whose sum is the residual stream h (the next layer's fused add-and-norm adds them). Per layer
the step
  1. adds every `add` intervention of every row at once: delta = C_l @ D_l, where C_l [T, K]
     holds each token's coefficient per direction (its row's, where its scope covers it) and
     D_l [K, H] the step's K unit directions at l,
  2. applies `ablate` / `clamp` slot by slot (slot j: each row's j-th projective intervention
     at l, all rows at once; they read the state the earlier ones left),
  3. returns (hidden, residual + delta): rows without a plan get residual + 0, bit for bit
     what they had,
  4. keeps the projections on D_l before and after, and the shift sizes, for the ledgers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from steerguard.runtime.plan import Operation
from steerguard.vllm.directions import DirectionTable
from steerguard.vllm.ledger import Ledger
from steerguard.vllm.rows import RowPlan, scope_mask


@dataclass(frozen=True)
class StepRow:
    """A planned row of this step."""

    plan: RowPlan
    start: int  # first token of the row in the flattened batch
    count: int  # tokens of the row in this step
    first: int  # request position of its first token
    prompt_len: int
    ledger: Ledger | None  # None: nothing is measured or read

    @property
    def positions(self) -> np.ndarray:
        return np.arange(self.first, self.first + self.count)


@dataclass(frozen=True)
class _Read:
    row: StepRow
    read: int
    tokens: torch.Tensor  # indices into the step's tokens
    positions: np.ndarray
    norm: bool


class StepProgram:
    """The compiled plans of one step; `apply(layer, hidden, residual)` steers one layer."""

    def __init__(
        self, rows: Sequence[StepRow], table: DirectionTable, num_tokens: int
    ) -> None:
        self.rows = list(rows)
        self.table = table
        self.num_tokens = num_tokens
        device, dtype = table.device, table.dtype
        num_layers = table.num_layers
        self.columns = tuple(dict.fromkeys(h for row in self.rows for h in row.plan.hashes))
        column = {h: k for k, h in enumerate(self.columns)}
        self.directions = table.stack(self.columns) if self.columns else None  # [L, K, H]
        self.measured = any(row.ledger is not None and row.plan.hashes for row in self.rows)

        coeffs = np.zeros((num_layers, num_tokens, max(len(self.columns), 1)), np.float32)
        slots = max((row.plan.num_slots for row in self.rows), default=0)
        p_col = np.zeros((num_layers, slots, num_tokens), np.int64)
        p_tgt = np.zeros((num_layers, slots, num_tokens), np.float32)
        p_act = np.zeros((num_layers, slots, num_tokens), np.float32)
        self.layer_slots = np.zeros(num_layers, np.int64)
        layers: set[int] = set()
        adds: set[int] = set()
        reads: dict[int, list[_Read]] = {}
        for row in self.rows:
            plan, lo, hi = row.plan, row.start, row.start + row.count
            positions = row.positions
            layers |= plan.layers
            for i, h in enumerate(plan.hashes):
                mask = scope_mask(positions, row.prompt_len, plan.scopes[i]).astype(np.float32)
                at = np.nonzero(plan.applied[i])[0]
                if plan.ops[i] is Operation.ADD:
                    coeffs[at, lo:hi, column[h]] += np.outer(plan.coefficients[i, at], mask)
                    adds.update(int(a) for a in at if plan.coefficients[i, a] != 0.0)
                    continue
                slot = plan.slots[i, at]
                p_col[at, slot, lo:hi] = column[h]
                p_act[at, slot, lo:hi] = mask
                if plan.ops[i] is Operation.CLAMP:
                    p_tgt[at, slot, lo:hi] = plan.coefficients[i, at][:, None]
                np.maximum.at(self.layer_slots, at, slot + 1)
            if row.ledger is not None:
                row.ledger.rewind(row.first)
                self._plan_reads(row, reads)
        self.layers = frozenset(layers) | frozenset(reads)
        self.adds = frozenset(adds)
        self.reads = reads
        self.coeffs = torch.from_numpy(coeffs).to(device, dtype)
        self.p_col = torch.from_numpy(p_col).to(device)
        self.p_tgt = torch.from_numpy(p_tgt).to(device, dtype)
        self.p_act = torch.from_numpy(p_act).to(device, dtype)
        self.before: dict[int, torch.Tensor] = {}
        self.after: dict[int, torch.Tensor] = {}
        self.moved: dict[int, torch.Tensor] = {}

    def _plan_reads(self, row: StepRow, reads: dict[int, list[_Read]]) -> None:
        positions = row.positions
        in_prompt = positions < row.prompt_len
        for r, read in enumerate(row.plan.wire.reads):
            wanted = in_prompt if read.positions is None else (
                in_prompt & np.isin(positions, read.positions)
            )
            if not wanted.any():
                continue
            tokens = torch.from_numpy(row.start + np.nonzero(wanted)[0]).to(self.table.device)
            for layer in read.layers:
                reads.setdefault(layer, []).append(
                    _Read(row, r, tokens, positions[wanted], read.kind == "norm")
                )

    # the hook -------------------------------------------------------------------------------

    def apply(
        self, layer: int, hidden: torch.Tensor, residual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Steer one layer's output; None leaves it as it is."""
        if layer not in self.layers:
            return None
        stream = hidden + residual
        padded = stream.shape[0] - self.num_tokens
        if padded:  # padding tokens at the end are never steered
            stream = stream[: self.num_tokens]
        for read in self.reads.get(layer, ()):
            values = stream.index_select(0, read.tokens)
            if read.norm:
                values = values.float().norm(dim=-1)
            assert read.row.ledger is not None
            read.row.ledger.add_read(read.read, layer, read.positions, values)
        directions = self.directions
        if directions is None:
            return None
        units = directions[layer]  # [K, H]
        out = stream
        delta: torch.Tensor | None = None
        if layer in self.adds:
            delta = self.coeffs[layer] @ units
            out = stream + delta
        slots = int(self.layer_slots[layer])
        moved = []
        for j in range(slots):
            unit = units.index_select(0, self.p_col[layer, j])  # [T, H]
            shift = (self.p_tgt[layer, j] - (out * unit).sum(-1)) * self.p_act[layer, j]
            step = shift.unsqueeze(-1) * unit
            out = out + step
            delta = step if delta is None else delta + step
            moved.append(shift.abs())
        if self.measured:
            self.before[layer] = stream @ units.T
            self.after[layer] = out @ units.T
            if moved:
                self.moved[layer] = torch.stack(moved, dim=1)
        if delta is None:
            return None
        if padded:
            delta = torch.nn.functional.pad(delta, (0, 0, 0, padded))
        return hidden, residual + delta

    # after the forward ----------------------------------------------------------------------

    def finish(self) -> None:
        """Hand each measured row its slice of this step's measurements."""
        if not self.measured or not self.before:
            return
        layers = sorted(self.before)
        where = np.full(self.table.num_layers, -1, np.int64)
        where[layers] = np.arange(len(layers))
        before = torch.stack([self.before[layer] for layer in layers], dim=1)  # [T, Lm, K]
        after = torch.stack([self.after[layer] for layer in layers], dim=1)
        slots = max(int(self.layer_slots.max(initial=0)), 1)
        moved = before.new_zeros(before.shape[0], len(layers), slots)
        for layer, values in self.moved.items():
            moved[:, where[layer], : values.shape[1]] = values
        column = {h: k for k, h in enumerate(self.columns)}
        for row in self.rows:
            plan, ledger = row.plan, row.ledger
            if ledger is None or not plan.hashes:
                continue
            lo, hi = row.start, row.start + row.count
            # A pipeline stage holds some layers only; the ledger reports those alone.
            lm = torch.from_numpy(np.maximum(where[plan.entry_l], 0)).to(before.device)
            k = torch.tensor([column[plan.hashes[i]] for i in plan.entry_i], device=lm.device)
            s = torch.from_numpy(plan.entry_slot).to(before.device)
            ledger.add(
                row.first,
                before[lo:hi, lm, k],
                after[lo:hi, lm, k],
                moved[lo:hi, lm, s],
            )
