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
from steerguard.policy.conditions import MISSING
from steerguard.policy.decision import Dropped, DropReason
from steerguard.policy.schema import StrengthFrom
from steerguard.runtime.plan import Intervention, Operation, Positions, SteeringPlan

_EPS = 1e-9


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


@dataclass
class _Slot:
    """Summed strength of one (vector, layer, op, positions)."""

    rank: int  # order of the first rule that contributed
    vector_hash: str | None
    strength: float = 0.0
    sources: list[str] = field(default_factory=list)


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

    # 4. contributions, summed per slot
    slots: dict[tuple[str, int, Operation, str], _Slot] = {}
    for rank, r in enumerate(survivors):
        for a in r.spec.apply:
            v = spec.vectors[a.vector]
            concept = v.concept or a.vector
            strength, note = _strength(a.strength, v.strength, profile)
            if strength is None:
                dropped.append(
                    Dropped(
                        rule_id=r.spec.id,
                        vector=a.vector,
                        reason=DropReason.MISSING_VALUE,
                        detail=note,
                    )
                )
                continue
            denial = denials.get((concept, _sign(strength))) or denials.get((concept, 0))
            if denial is not None:
                dropped.append(
                    Dropped(
                        rule_id=r.spec.id,
                        vector=a.vector,
                        reason=DropReason.DENIED,
                        detail=f"denied by rule {denial[1]!r} ({denial[0]!r}); "
                        f"strength {strength:+.3f}",
                    )
                )
                continue
            op = a.op or v.op
            positions = a.positions or v.positions
            for layer in a.layers or v.layers:
                slot = slots.setdefault(
                    (concept, layer, op, positions), _Slot(rank=rank, vector_hash=v.hash)
                )
                slot.strength += strength
                if r.spec.id not in slot.sources:
                    slot.sources.append(r.spec.id)

    # 5. vector limit, in order of each vector's first contributing rule
    order: dict[str, int] = {}
    for (concept, *_), slot in slots.items():
        order[concept] = min(order.get(concept, slot.rank), slot.rank)
    kept = sorted(order, key=lambda c: (order[c], c))[: spec.limits.max_vectors]
    for concept in sorted(set(order) - set(kept), key=lambda c: (order[c], c)):
        first = next(s for k, s in slots.items() if k[0] == concept and s.rank == order[concept])
        dropped.append(
            Dropped(
                rule_id=first.sources[0],
                vector=concept,
                reason=DropReason.OVER_VECTOR_LIMIT,
                detail=f"max_vectors {spec.limits.max_vectors} already used by {', '.join(kept)}",
            )
        )
    slots = {k: s for k, s in slots.items() if k[0] in kept}

    # 6. per-layer budget, handed out in rule order
    budget = spec.limits.max_total_strength
    clamps: dict[tuple[str, str, float, float], list[int]] = {}
    by_layer: dict[int, list[tuple[tuple[str, int, Operation, str], _Slot]]] = {}
    for key, slot in slots.items():
        slot.strength = round(slot.strength, 9)  # 0.1 + 0.2 should equal 0.3 in a plan
        by_layer.setdefault(key[1], []).append((key, slot))
    for layer, items in sorted(by_layer.items()):
        left = budget
        for key, slot in sorted(
            items, key=lambda it: (it[1].rank, it[0][0], it[0][2].value, it[0][3])
        ):
            if key[2] is Operation.ABLATE:
                continue  # ablation sets a component to zero; it has no size to budget
            size = abs(slot.strength)
            if size <= left + _EPS:
                left -= size
                continue
            new = round(_sign(slot.strength) * max(left, 0.0), 9)
            clamps.setdefault((slot.sources[0], key[0], slot.strength, new), []).append(layer)
            slot.strength, left = new, 0.0
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


def _strength(
    value: float | StrengthFrom | None, default: float, profile: Mapping[str, Any]
) -> tuple[float | None, str]:
    if value is None:
        return default, ""
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


def _interventions(slots: dict[tuple[str, int, Operation, str], _Slot]) -> tuple[Intervention, ...]:
    # Layers that share vector, op, positions, strength and sources become one intervention.
    groups: dict[tuple[str, Operation, str, float, str | None, str], tuple[int, list[int]]] = {}
    for (concept, layer, op, positions), slot in slots.items():
        if op is Operation.ADD and slot.strength == 0.0:
            continue
        k = (concept, op, positions, slot.strength, slot.vector_hash, "+".join(slot.sources))
        rank, layers = groups.setdefault(k, (slot.rank, []))
        layers.append(layer)
        groups[k] = (min(rank, slot.rank), layers)
    out = [
        (
            rank,
            Intervention(
                vector=concept,
                vector_hash=vhash,
                layers=tuple(sorted(layers)),
                strength=strength,
                op=op,
                positions=Positions.parse(positions),
                source=sources,
            ),
        )
        for (concept, op, positions, strength, vhash, sources), (rank, layers) in groups.items()
    ]
    out.sort(key=lambda t: (t[0], t[1].vector, t[1].op.value, str(t[1].positions), t[1].layers))
    return tuple(i for _, i in out)


def _span(layers: list[int]) -> str:
    layers = sorted(layers)
    if len(layers) > 1 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))
