"""A request's wire plan compiled once, in the worker, into arrays over layers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from steerguard.errors import PlanError
from steerguard.runtime.plan import Operation, Positions, PositionScope
from steerguard.vllm.directions import DirectionTable
from steerguard.vllm.wire import WirePlan


def scope_mask(positions: np.ndarray, prompt_len: int, scope: Positions) -> np.ndarray:
    """Which of the token `positions` (0-based, in the request) `scope` steers."""
    if scope.scope is PositionScope.ALL:
        return np.ones(positions.shape, dtype=bool)
    if scope.scope is PositionScope.PROMPT:
        return positions < prompt_len
    if scope.scope is PositionScope.GENERATED:
        return positions >= prompt_len
    return (positions >= prompt_len - (scope.n or 1)) & (positions < prompt_len)


@dataclass(frozen=True)
class RowPlan:
    """Per intervention i and layer l: the coefficient, whether it applies there and (ablate,
    clamp) its slot, the order of the row's projective interventions at l. Entries (i, l) are
    in report order: by intervention, then layer."""

    wire: WirePlan
    hashes: tuple[str, ...]  # [I]
    ops: tuple[Operation, ...]  # [I]
    scopes: tuple[Positions, ...]  # [I]
    coefficients: np.ndarray  # [I, L] float64, 0 where not applied
    applied: np.ndarray  # [I, L] bool
    slots: np.ndarray  # [I, L] int, -1 for add or not applied
    entry_i: np.ndarray  # [E]
    entry_l: np.ndarray  # [E]
    entry_slot: np.ndarray  # [E], 0 for add entries (their moved value is unused)
    layers: frozenset[int]  # layers with an intervention
    read_layers: frozenset[int]

    @property
    def num_slots(self) -> int:
        return int(self.slots.max(initial=-1)) + 1

    @property
    def projective(self) -> np.ndarray:
        return np.array([op is not Operation.ADD for op in self.ops], dtype=bool)


def compile_row(wire: WirePlan, table: DirectionTable) -> RowPlan:
    """Check the plan against the worker's vectors and model; PlanError names what is wrong."""
    num_layers = table.num_layers
    count = len(wire.interventions)
    coefficients = np.zeros((count, num_layers))
    applied = np.zeros((count, num_layers), dtype=bool)
    slots = np.full((count, num_layers), -1, dtype=np.int64)
    used = np.zeros(num_layers, dtype=np.int64)
    for i, iv in enumerate(wire.interventions):
        try:
            _, has = table.get(iv.vector_hash)
        except Exception as exc:  # a missing or unreadable file: the row cannot be steered
            raise PlanError(f"intervention {i}: {exc}") from exc
        for layer, value in iv.coefficients.items():
            if layer >= num_layers:
                raise PlanError(
                    f"intervention {i}: layer {layer} out of range 0..{num_layers - 1}"
                )
            if layer not in has:
                raise PlanError(
                    f"intervention {i}: vector {iv.vector_hash} has no direction for layer "
                    f"{layer}"
                )
            coefficients[i, layer] = value
            applied[i, layer] = True
        if iv.op is not Operation.ADD:
            slots[i, applied[i]] = used[applied[i]]
            used[applied[i]] += 1
    for read in wire.reads:
        bad = [layer for layer in read.layers if layer >= num_layers]
        if bad:
            raise PlanError(f"read of layers {bad}: out of range 0..{num_layers - 1}")
    entry_i, entry_l = np.nonzero(applied)  # row-major: by intervention, then layer
    return RowPlan(
        wire=wire,
        hashes=tuple(iv.vector_hash for iv in wire.interventions),
        ops=tuple(iv.op for iv in wire.interventions),
        scopes=tuple(iv.positions for iv in wire.interventions),
        coefficients=coefficients,
        applied=applied,
        slots=slots,
        entry_i=entry_i,
        entry_l=entry_l,
        entry_slot=np.maximum(slots[entry_i, entry_l], 0),
        layers=frozenset(int(layer) for layer in np.nonzero(applied.any(axis=0))[0]),
        read_layers=frozenset(layer for read in wire.reads for layer in read.layers),
    )
