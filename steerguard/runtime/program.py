"""A steering plan compiled for one forward batch: the tensors each layer applies, and the
measurements it keeps.

Per layer the program
  1. projects the layer output onto every direction used there (one matmul, "before"),
  2. adds one combined delta per position scope (all `add` interventions of all rows at once),
  3. applies `ablate` / `clamp` interventions one by one (they depend on the current state),
  4. projects again ("after").
Projections are stored as tensors and reduced once, when the call ends, so the decode loop
never waits on a device sync.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from transformers.cache_utils import DynamicLayer

from steerguard.directions.probe import ActivationProbe
from steerguard.directions.vector import SteeringVector
from steerguard.errors import PlanError
from steerguard.runtime.hooks import ForwardStopped, LayerReplay
from steerguard.runtime.plan import Operation, Positions, PositionScope, SteeringPlan
from steerguard.runtime.report import InterventionReport, LayerMeasurement


@dataclass(frozen=True)
class _ProbeRead:
    """One layer an activation probe reads at the last prompt position during prefill (or
    `probe_offsets` tokens earlier): (h . direction - center) / spread."""

    name: str
    layer: int
    direction: torch.Tensor  # unit vector [hidden]
    center: float
    spread: float


PlanResolver = Callable[[Mapping[str, float]], SteeringPlan]


class SecondPrefill(ForwardStopped):
    """Raised mid-prefill when the resolved plan steers prompt positions below the probe
    layer: the layers still to run in this pass would be thrown away, so stop now."""


@dataclass
class _Entry:
    """One intervention of one row at one layer."""

    row: int
    index: int
    column: int
    op: Operation
    scope: Positions
    slot: int  # the scope's index in the step's mask list (cheaper than hashing Positions)
    coefficient: float


@dataclass
class _LayerOps:
    directions: torch.Tensor  # [hidden, K] unit columns
    entries: list[_Entry] = field(default_factory=list)
    add_deltas: dict[int, torch.Tensor] = field(default_factory=dict)  # slot -> [B, 1, H]
    projective: list[tuple[_Entry, torch.Tensor, torch.Tensor]] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    before: list[torch.Tensor] = field(default_factory=list)
    after: list[torch.Tensor] = field(default_factory=list)
    moved: dict[int, list[torch.Tensor]] = field(default_factory=dict)  # entry id -> |c| [B,T]


_SKIP = object()  # scope inactive for this step
# Prefill outputs kept for a second prefill to start above the layers it does not steer; a
# batch whose kept outputs would pass this runs its second prefill from layer 0.
_KEPT_BYTES = 512 * 2**20
_DECODED = (PositionScope.ALL, PositionScope.GENERATED)  # scopes that steer generated tokens


class SteeringProgram:
    """Compiled per-row plans for one batch; callable as a `LayerProgram`."""

    def __init__(
        self,
        plans: Sequence[SteeringPlan | None],
        vectors: Mapping[str, SteeringVector],
        layer_norms: torch.Tensor,
        *,
        dtype: torch.dtype,
        device: torch.device,
        probes: Sequence[ActivationProbe] = (),
        probe_offsets: Sequence[int] | None = None,
        resolvers: Sequence[PlanResolver | None] | None = None,
    ) -> None:
        self.batch = len(plans)
        self.vectors = vectors
        self.layer_norms = layer_norms
        self.dtype, self.device = dtype, device
        self.plans: list[SteeringPlan | None] = list(plans)
        # The probe's value is the mean of its parts' readings.
        self.probes = [_ProbeRead(p.name, part.layer, part.direction_tensor(), part.center,
                                  part.spread) for p in probes for part in p.parts]
        self._parts = {p.name: len(p.parts) for p in probes}
        # Probes read position T-1-offset of each (left-padded) row during prefill.
        self.probe_offsets = torch.tensor(
            list(probe_offsets) if probe_offsets is not None else [0] * self.batch,
            dtype=torch.long,
            device=device,
        )
        self.resolvers = list(resolvers) if resolvers is not None else [None] * self.batch
        self.resolve_layer = max((p.layer for p in self.probes), default=-1)
        self.scores: list[dict[str, float]] = [{} for _ in range(self.batch)]
        self._probe_values: dict[str, torch.Tensor] = {}
        self.layers: dict[int, _LayerOps] = {}
        self.scopes: set[Positions] = set()
        self.step = -1
        self.prefill = True
        self.step_masks: list[dict[Positions, torch.Tensor]] = []
        self._slots: dict[Positions, int] = {}  # only grows: slots stay valid across recompiles
        self._apply_masks: list[object] = []  # by slot: a mask, None (all rows) or _SKIP
        self._prefill_mask: torch.Tensor | None = None  # for scopes a resolver adds mid-prefill
        # A continuous batcher sets `rerun_apart`: when only some rows need the second
        # prefill, the pass goes on for the others and `rerun` names the rows it must run
        # again by themselves, so rows that need no second pass do not pay for one.
        self.rerun_apart = False
        self.rerun: list[int] = []
        # Layer outputs of the first prefill, while a resolver may still ask for a second one.
        self._kept: dict[int, torch.Tensor] = {}
        self._keeping = any(self.resolvers)
        self.replay: LayerReplay | None = None
        self._compile()

    # compile --------------------------------------------------------------------------------

    def _compile(self) -> None:
        self.layers = {}
        self.scopes = set()
        specs: dict[int, list[tuple[int, int, Operation, Positions, float, str]]] = {}
        for row, plan in enumerate(self.plans):
            for index, iv in enumerate(plan.interventions if plan else ()):
                vector = self._vector(iv.vector, iv.vector_hash)
                for layer in iv.layers:
                    if layer not in vector.directions:
                        raise PlanError(
                            f"vector {iv.vector!r} has no direction for layer {layer}; "
                            f"it has layers {vector.layers}"
                        )
                    scale = float(self.layer_norms[layer])
                    coefficient = iv.strength * scale
                    scope = iv.positions
                    specs.setdefault(layer, []).append(
                        (row, index, iv.op, scope, coefficient, iv.vector)
                    )
                    self.scopes.add(scope)
        for layer, items in specs.items():
            names = sorted({name for *_, name in items})
            columns = {name: k for k, name in enumerate(names)}
            units = torch.stack([self.vectors[n].unit(layer) for n in names], dim=1)
            ops = _LayerOps(directions=units.to(self.device, self.dtype))
            hidden = units.shape[0]
            for row, index, op, scope, coefficient, name in items:
                slot = self._slots.setdefault(scope, len(self._slots))
                entry = _Entry(row, index, columns[name], op, scope, slot, coefficient)
                ops.entries.append(entry)
                unit = ops.directions[:, entry.column]
                if op is Operation.ADD:
                    delta = ops.add_deltas.setdefault(
                        slot,
                        torch.zeros(self.batch, 1, hidden, dtype=self.dtype, device=self.device),
                    )
                    delta[row, 0] += coefficient * unit
                else:
                    rows = torch.zeros(self.batch, 1, dtype=self.dtype, device=self.device)
                    rows[row] = 1.0
                    target = torch.full_like(rows, coefficient if op is Operation.CLAMP else 0.0)
                    ops.projective.append((entry, rows, target))
                    ops.moved[id(entry)] = []
            self.layers[layer] = ops

    def _vector(self, name: str, pinned: str | None) -> SteeringVector:
        vector = self.vectors.get(name)
        if vector is None:
            known = ", ".join(sorted(self.vectors)) or "none"
            raise PlanError(f"plan names vector {name!r}, which is not loaded (loaded: {known})")
        if pinned is not None and vector.content_hash() != pinned:
            raise PlanError(
                f"plan pins vector {name!r} to hash {pinned}, the loaded one is "
                f"{vector.content_hash()}"
            )
        return vector

    @property
    def is_noop(self) -> bool:
        return not self.layers and not self.probes

    # steps ------------------------------------------------------------------------------------

    def begin_prefill(self, attention_mask: torch.Tensor) -> None:
        """Prompt positions are the unmasked ones (prompts are left padded)."""
        self.step += 1
        self.prefill = True
        self._prefill_mask = attention_mask
        valid = attention_mask.to(self.dtype)
        masks: dict[Positions, torch.Tensor] = {}
        for scope in self.scopes:
            if scope.scope in (PositionScope.ALL, PositionScope.PROMPT):
                masks[scope] = valid
            elif scope.scope is PositionScope.GENERATED:
                masks[scope] = torch.zeros_like(valid)
            else:
                last = torch.zeros_like(valid)
                last[:, -(scope.n or 1) :] = 1.0
                masks[scope] = last * valid
        self._set_masks(masks)

    def begin_decode(self, alive: torch.Tensor) -> None:
        """One new position per row; rows that already finished are not measured."""
        self._kept, self._keeping, self.replay = {}, False, None
        self.step += 1
        self.prefill = False
        live = alive.to(self.dtype)[:, None]
        idle = torch.zeros_like(live)
        masks = {scope: live if scope.scope in _DECODED else idle for scope in self.scopes}
        self._set_masks(masks)
        # Finished rows may be steered harmlessly (their tokens are discarded): skip the mask.
        for scope, mask in masks.items():
            self._apply_masks[self._slots[scope]] = None if bool(mask.any()) else _SKIP

    def _set_masks(self, masks: dict[Positions, torch.Tensor]) -> None:
        self.step_masks.append(masks)
        self._apply_masks = [_SKIP] * len(self._slots)
        for scope, mask in masks.items():
            self._apply_masks[self._slots[scope]] = mask

    # the hook ---------------------------------------------------------------------------------

    def __call__(self, layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
        if self.prefill and layer <= self.resolve_layer:
            self._read_probes(layer, hidden)
        out = self._steer(layer, hidden)
        if self._keeping and self.prefill and layer < self.resolve_layer:
            self._keep(layer, hidden if out is None else out)
        return out

    def _keep(self, layer: int, output: torch.Tensor) -> None:
        if output.numel() * output.element_size() * self.resolve_layer > _KEPT_BYTES:
            self._keeping = False
            return
        self._kept[layer] = output

    def _steer(self, layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
        ops = self.layers.get(layer)
        if ops is None:
            return None
        masks = self._apply_masks
        if all(masks[e.slot] is _SKIP for e in ops.entries):
            return None
        out = hidden
        for slot, delta in ops.add_deltas.items():
            mask = masks[slot]
            if mask is not _SKIP:
                out = out + (delta if mask is None else delta * mask.unsqueeze(-1))
        for entry, rows, target in ops.projective:
            mask = masks[entry.slot]
            if mask is _SKIP:  # keep the per-step lists aligned with ops.steps
                ops.moved[id(entry)].append(hidden.new_zeros(hidden.shape[:2]))
                continue
            unit = ops.directions[:, entry.column]
            shift = (target - out @ unit) * rows
            if mask is not None:
                shift = shift * mask
            out = out + shift.unsqueeze(-1) * unit
            ops.moved[id(entry)].append(shift.abs())
        ops.steps.append(self.step)
        ops.before.append(hidden @ ops.directions)
        ops.after.append(out @ ops.directions)
        return out

    def _read_probes(self, layer: int, hidden: torch.Tensor) -> None:
        read = None
        for probe in self.probes:
            if probe.layer == layer:
                if read is None:
                    rows = torch.arange(hidden.shape[0], device=hidden.device)
                    read = hidden[rows, hidden.shape[1] - 1 - self.probe_offsets]
                direction = probe.direction.to(hidden.device, hidden.dtype)
                value = ((read @ direction).float() - probe.center) / probe.spread
                done = self._probe_values.get(probe.name)
                self._probe_values[probe.name] = value if done is None else done + value
        if layer == self.resolve_layer:
            self._resolve()

    def _resolve(self) -> None:
        """Turn probe scores into plans, mid-prefill; later layers are steered in this pass."""
        values = {name: (v / self._parts[name]).tolist() for name, v in self._probe_values.items()}
        self.scores = [{name: v[row] for name, v in values.items()} for row in range(self.batch)]
        if not any(self.resolvers):
            return
        for row, resolver in enumerate(self.resolvers):
            if resolver is not None:
                self.plans[row] = resolver(self.scores[row])
        self.resolvers = [None] * self.batch
        self._compile()
        again = self.rows_needing_second_prefill()
        if again and (not self.rerun_apart or len(again) == self.batch):
            raise SecondPrefill
        self.rerun = again
        self._set_masks_for_new_scopes()

    def _set_masks_for_new_scopes(self) -> None:
        # Scopes that only appeared after resolving need prefill masks for this step.
        current = self.step_masks[-1]
        if set(current) >= self.scopes:
            return
        reference = self._prefill_mask
        if reference is None:
            raise PlanError("resolved plans need the prefill attention mask")
        self.step_masks.pop()
        self.step -= 1
        self.begin_prefill(reference)

    def needs_second_prefill(self) -> bool:
        """True when a resolved plan steers prompt positions before the probe layer. The probe
        layer itself is fine: probes read its output before the new plan steers it."""
        return bool(self.rows_needing_second_prefill())

    def rows_needing_second_prefill(self) -> list[int]:
        """The rows whose resolved plan steers prompt positions before the probe layer."""
        return sorted({
            e.row
            for layer, ops in self.layers.items() if layer < self.resolve_layer
            for e in ops.entries if e.scope.scope is not PositionScope.GENERATED
        })

    def restart(self) -> None:
        """Forget measurements and step state (before a second prefill)."""
        self.resolve_layer = -1
        self.step = -1
        self.step_masks = []
        self._keeping = False
        self._compile()

    def replay_for(self, rows: Sequence[int], cache: object, width: int) -> LayerReplay | None:
        """What a second prefill of `rows` (this batch's rows, left padded to `width`) can
        take from the first one: the layers below the lowest one their plans steer on prompt
        positions ran unsteered for them, so their outputs and cache entries stand. None when
        there is nothing to skip, or the cache is not one that keeps every position."""
        kept, self._kept, self._keeping = self._kept, {}, False
        steered = [layer for layer, ops in self.layers.items()
                   if any(e.row in rows and e.scope.scope is not PositionScope.GENERATED
                          for e in ops.entries)]
        start = min(steered, default=0)
        layers = getattr(cache, "layers", None)
        if start == 0 or start - 1 not in kept or layers is None or len(layers) < start:
            return None
        if any(type(layer) is not DynamicLayer or not layer.is_initialized
               for layer in layers[:start]):
            return None
        index = torch.tensor(list(rows), device=kept[start - 1].device)
        return LayerReplay(
            start,
            kept[start - 1].index_select(0, index)[:, -width:],
            tuple(layer.keys.index_select(0, index)[..., -width:, :] for layer in layers[:start]),
            tuple(layer.values.index_select(0, index)[..., -width:, :]
                  for layer in layers[:start]),
        )

    # reports ----------------------------------------------------------------------------------

    def reports(self) -> list[list[InterventionReport]]:
        """Reduce the stored tensors into one report per intervention per row."""
        measured: dict[tuple[int, int], list[LayerMeasurement]] = {}
        coefficients: dict[tuple[int, int], dict[int, float]] = {}
        for layer in sorted(self.layers):
            ops = self.layers[layer]
            before = torch.cat(ops.before, dim=1).float() if ops.before else None
            after = torch.cat(ops.after, dim=1).float() if ops.after else None
            for entry in ops.entries:
                key = (entry.row, entry.index)
                coefficients.setdefault(key, {})[layer] = entry.coefficient
                measured.setdefault(key, []).append(self._measure(ops, entry, layer, before, after))
        out: list[list[InterventionReport]] = []
        for row, plan in enumerate(self.plans):
            row_reports = []
            for index, iv in enumerate(plan.interventions if plan else ()):
                key = (row, index)
                row_reports.append(
                    InterventionReport(
                        index=index,
                        intervention=iv,
                        vector_hash=self.vectors[iv.vector].content_hash(),
                        coefficients=coefficients.get(key, {}),
                        layers=tuple(measured.get(key, [])),
                    )
                )
            out.append(row_reports)
        return out

    def _measure(
        self,
        ops: _LayerOps,
        entry: _Entry,
        layer: int,
        before: torch.Tensor | None,
        after: torch.Tensor | None,
    ) -> LayerMeasurement:
        if before is None or after is None:
            return _unchanged(layer)
        mask = torch.cat([self.step_masks[s][entry.scope] for s in ops.steps], dim=1)[entry.row]
        mask = mask.float()
        count = float(mask.sum())
        if count == 0:
            return _unchanged(layer)
        proj_before = float((before[entry.row, :, entry.column] * mask).sum()) / count
        proj_after = float((after[entry.row, :, entry.column] * mask).sum()) / count
        if entry.op is Operation.ADD:
            delta = abs(entry.coefficient)  # the added vector is coefficient * unit direction
        else:
            moved = torch.cat(ops.moved[id(entry)], dim=1)[entry.row].float()
            delta = float((moved * mask).sum()) / count
        return LayerMeasurement(
            layer=layer,
            positions_affected=int(count),
            delta_norm=delta,
            projection_before=proj_before,
            projection_after=proj_after,
        )


def _unchanged(layer: int) -> LayerMeasurement:
    """A layer's measurement with nothing steered there (or nothing to compare)."""
    return LayerMeasurement(layer=layer, positions_affected=0, delta_norm=0.0,
                            projection_before=0.0, projection_after=0.0)
