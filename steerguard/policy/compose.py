"""Composition: from the matched rules to one SteeringPlan, deterministically.

1. Matched rules are ordered by priority (higher first), then id.
2. Exclusive groups: only the first rule of each group survives; a rule that lost its group
   has no effect at all (neither its apply nor its deny list).
3. Deny: each surviving rule's deny list removes every contribution of the denied vector's
   library vector with the same sign as the denied name's default strength (so denying
   `casual` = formality at -0.3 also removes a negative strength given to `formal`).
4. Strengths for the same vector, layer, operation and positions add up.
5. Vector limit: at most `max_vectors` library vectors, kept in rule order.
6. Budget: per layer, the sum of |strength| is at most `max_total_strength`; it is handed out
   in rule order, so a higher-priority vector keeps its strength and later ones are clamped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from steerguard.policy.bundle import Bundle, CompiledRule
from steerguard.policy.decision import Dropped, DropReason
from steerguard.policy.fields import MISSING
from steerguard.policy.schema import StrengthFrom
from steerguard.runtime.plan import Intervention, Operation, Positions, SteeringPlan

_EPS = 1e-9


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


@dataclass
class _Slot:
    """Strengths of one (vector, op, positions), per layer, summed over rules."""

    rank: int  # order of the first rule that contributed
    vector_hash: str | None
    layers: dict[int, float] = field(default_factory=dict)
    sources: dict[int, list[str]] = field(default_factory=dict)


SlotKey = tuple[str, Operation, Positions]


def compose(
    bundle: Bundle, matched: list[CompiledRule], profile: Mapping[str, Any]
) -> tuple[SteeringPlan, list[Dropped]]:
    spec = bundle.spec
    dropped: list[Dropped] = []

    # 2. exclusive groups (matched is already in priority, id order)
    winners: dict[str, CompiledRule] = {}
    survivors: list[CompiledRule] = []
    for r in matched:
        g = r.spec.group
        if g is not None and g in winners:
            w = winners[g]
            dropped.append(
                Dropped(
                    rule_id=r.spec.id,
                    reason=DropReason.LOST_GROUP,
                    detail=f"group {g!r} went to {w.spec.id!r} (priority {w.spec.priority})",
                )
            )
            continue
        if g is not None:
            winners[g] = r
        survivors.append(r)

    # 3. deny entries: (library vector, sign or 0 for any sign) -> (denied name, denying rule)
    denials: dict[tuple[str, int], tuple[str, str]] = {}
    for r in survivors:
        for name in r.spec.deny:
            v = spec.vectors[name]
            denials.setdefault((v.concept or name, _sign(v.strength)), (name, r.spec.id))

    # 4. contributions, summed per vector, op, positions and layer
    slots: dict[SlotKey, _Slot] = {}
    for rank, r in enumerate(survivors):
        rid = r.spec.id
        for a in r.applies:
            strength, note = _strength(a.strength, profile)
            if strength is None:
                dropped.append(
                    Dropped(
                        rule_id=rid, vector=a.name, reason=DropReason.MISSING_VALUE, detail=note
                    )
                )
                continue
            if denials:
                denial = denials.get((a.concept, _sign(strength))) or denials.get((a.concept, 0))
                if denial is not None:
                    dropped.append(
                        Dropped(
                            rule_id=rid,
                            vector=a.name,
                            reason=DropReason.DENIED,
                            detail=f"denied by rule {denial[1]!r} ({denial[0]!r}); "
                            f"strength {strength:+.3f}",
                        )
                    )
                    continue
            slot = slots.get((a.concept, a.op, a.positions))
            if slot is None:
                slot = slots[(a.concept, a.op, a.positions)] = _Slot(rank, a.vector_hash)
            for layer in a.layers:
                slot.layers[layer] = slot.layers.get(layer, 0.0) + strength
                src = slot.sources.setdefault(layer, [])
                if rid not in src:
                    src.append(rid)

    # 5. vector limit, in order of each vector's first contributing rule
    order: dict[str, int] = {}
    for (concept, _, _), slot in slots.items():
        order[concept] = min(order.get(concept, slot.rank), slot.rank)
    if len(order) > spec.limits.max_vectors:
        ranked = sorted(order, key=lambda c: (order[c], c))
        kept = ranked[: spec.limits.max_vectors]
        for concept in ranked[spec.limits.max_vectors :]:
            first = min((s for k, s in slots.items() if k[0] == concept), key=lambda s: s.rank)
            dropped.append(
                Dropped(
                    rule_id=survivors[first.rank].spec.id,
                    vector=concept,
                    reason=DropReason.OVER_VECTOR_LIMIT,
                    detail=f"max_vectors {spec.limits.max_vectors} already used by "
                    + ", ".join(kept),
                )
            )
        slots = {k: s for k, s in slots.items() if k[0] in kept}

    # 6. per-layer budget, handed out in rule order (only layers over budget need work)
    for slot in slots.values():
        for layer, value in slot.layers.items():
            slot.layers[layer] = round(value, 9)  # 0.1 + 0.2 should equal 0.3 in a plan
    budget = spec.limits.max_total_strength
    totals: dict[int, float] = {}
    for (_, op, _), slot in slots.items():
        if op is not Operation.ABLATE:  # ablation has no size to budget
            for layer, value in slot.layers.items():
                totals[layer] = totals.get(layer, 0.0) + abs(value)
    clamps: dict[tuple[str, str, float, float], list[int]] = {}
    for layer in sorted(ly for ly, t in totals.items() if t > budget + _EPS):
        left = budget
        users = [
            (s.rank, k, s)
            for k, s in slots.items()
            if k[1] is not Operation.ABLATE and layer in s.layers
        ]
        for _, key, slot in sorted(users, key=lambda u: (u[0], u[1][0], u[1][1].value, u[1][2])):
            value = slot.layers[layer]
            if abs(value) <= left + _EPS:
                left -= abs(value)
                continue
            new = round(_sign(value) * max(left, 0.0), 9)
            clamps.setdefault((slot.sources[layer][0], key[0], value, new), []).append(layer)
            slot.layers[layer], left = new, 0.0
    for (rule_id, concept, old, new), layers in clamps.items():
        dropped.append(
            Dropped(
                rule_id=rule_id,
                vector=concept,
                reason=DropReason.CLAMPED,
                detail=f"{old:+.3f} -> {new:+.3f} at layers {_span(layers)} "
                f"(max_total_strength {budget} per layer)",
            )
        )
    return SteeringPlan(interventions=_interventions(slots)), dropped


def _strength(value: float | StrengthFrom, profile: Mapping[str, Any]) -> tuple[float | None, str]:
    if not isinstance(value, StrengthFrom):
        return value, ""
    name = value.from_.removeprefix("profile.")
    raw = profile.get(name, MISSING)
    if raw is MISSING:
        if value.default is None:
            return None, f"profile field {name!r} is absent and the rule gives no default"
        return value.default, f"profile field {name!r} absent; default {value.default}"
    s = value.offset + value.scale * float(raw)
    return min(max(s, value.min), value.max), f"{name} = {raw!r}"


def _interventions(slots: dict[SlotKey, _Slot]) -> tuple[Intervention, ...]:
    # Layers of one slot that share strength and sources become one intervention.
    out: list[tuple[int, Intervention]] = []
    for (concept, op, positions), slot in slots.items():
        groups: dict[tuple[float, str], list[int]] = {}
        for layer, value in slot.layers.items():
            if op is Operation.ADD and value == 0.0:
                continue
            groups.setdefault((value, "+".join(slot.sources[layer])), []).append(layer)
        for (value, sources), layers in groups.items():
            intervention = Intervention(
                vector=concept,
                vector_hash=slot.vector_hash,
                layers=tuple(sorted(layers)),
                strength=value,
                op=op,
                positions=positions,
                source=sources,
            )
            out.append((slot.rank, intervention))
    out.sort(key=lambda t: (t[0], t[1].vector, t[1].op.value, str(t[1].positions), t[1].layers))
    return tuple(i for _, i in out)


def _span(layers: list[int]) -> str:
    layers = sorted(layers)
    if len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))
