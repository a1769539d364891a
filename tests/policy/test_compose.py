"""Composition: priority/id order, groups, deny, summing, vector limit, budget clamp."""

from __future__ import annotations

from steerguard.policy.decision import DropReason
from steerguard.policy.inputs import ChatMessage, UserProfile

from .helpers import engine

HI = [ChatMessage(role="user", content="hi")]
U = UserProfile(user_id="u")
S = {"harmful": 0.0}


def plan_of(
    rules: str, profile: UserProfile = U, **kw: object
) -> dict[str, list[tuple[tuple[int, ...], float]]]:
    d = engine(rules, **kw).decide(HI, profile, None, S)  # type: ignore[arg-type]
    out: dict[str, list[tuple[tuple[int, ...], float]]] = {}
    for i in d.plan.interventions:
        out.setdefault(i.vector, []).append((i.layers, i.strength))
    return out


def test_same_vector_and_layer_add_up_and_layers_split() -> None:
    rules = """
    - id: a
      when: {all: []}
      apply: [{vector: concise, strength: 0.1}]
    - id: b
      when: {all: []}
      apply: [{vector: concise, strength: 0.2, layers: [10, 11]}]
    """
    assert plan_of(rules) == {"concision": [((9,), 0.1), ((10,), 0.3), ((11,), 0.2)]}


def test_opposite_signs_of_one_library_vector_cancel() -> None:
    rules = """
    - id: a
      when: {all: []}
      apply: [formal, casual]
    """
    assert plan_of(rules) == {}  # +0.3 and -0.3 of formality: nothing left to add


def test_deny_removes_same_sign_of_the_library_vector() -> None:
    rules = """
    - id: guard
      priority: 9
      when: {all: []}
      deny: [casual]
    - id: wants-casual
      when: {all: []}
      apply: [casual, {vector: formal, strength: -0.2}, {vector: formal, strength: 0.1}]
    """
    d = engine(rules).decide(HI, U, None, S)
    denied = [(x.rule_id, x.vector) for x in d.dropped if x.reason is DropReason.DENIED]
    assert denied == [("wants-casual", "casual"), ("wants-casual", "formal")]
    assert [(i.vector, i.strength) for i in d.plan.interventions] == [("formality", 0.1)]
    assert "denied by rule 'guard'" in d.dropped[0].detail


def test_exclusive_group_keeps_highest_priority_then_id() -> None:
    rules = """
    - id: b
      priority: 5
      group: tone
      when: {all: []}
      apply: [empathy]
      deny: [concise]
    - id: a
      priority: 5
      group: tone
      when: {all: []}
      apply: [caution]
    - id: other
      when: {all: []}
      apply: [concise]
    """
    d = engine(rules).decide(HI, U, None, S)
    assert d.rule_ids == ["a", "b", "other"]
    (lost,) = [x for x in d.dropped if x.reason is DropReason.LOST_GROUP]
    assert lost.rule_id == "b" and "'a'" in lost.detail
    # the loser has no effect at all: its deny list does not apply either
    assert {i.vector for i in d.plan.interventions} == {"caution", "concision"}


def test_budget_goes_to_higher_priority_first() -> None:
    rules = """
    - id: hi
      priority: 10
      when: {all: []}
      apply: [{vector: empathy, strength: 0.4}]
    - id: lo
      when: {all: []}
      apply: [{vector: caution, strength: -0.4}]
    """
    d = engine(rules, budget=0.5).decide(HI, U, None, S)
    assert [(i.vector, i.strength) for i in d.plan.interventions] == [
        ("empathy", 0.4),
        ("caution", -0.1),
    ]
    (clamp,) = [x for x in d.dropped if x.reason is DropReason.CLAMPED]
    assert clamp.rule_id == "lo" and "-0.400 -> -0.100 at layers 8-9" in clamp.detail
    total = sum(abs(i.strength) for i in d.plan.interventions)
    assert total <= 0.5 + 1e-9


def test_vector_limit_keeps_vectors_of_earlier_rules() -> None:
    rules = """
    - id: a
      priority: 3
      when: {all: []}
      apply: [empathy]
    - id: b
      priority: 2
      when: {all: []}
      apply: [caution]
    - id: c
      priority: 1
      when: {all: []}
      apply: [concise]
    """
    d = engine(rules, max_vectors=2).decide(HI, U, None, S)
    assert [i.vector for i in d.plan.interventions] == ["empathy", "caution"]
    (over,) = d.dropped
    assert (
        over.reason is DropReason.OVER_VECTOR_LIMIT
        and over.rule_id == "c"
        and over.vector == "concision"
    )


def test_strength_from_profile_is_scaled_and_clamped() -> None:
    rules = """
    - id: f
      when: {all: []}
      apply:
        - vector: formal
          strength: {from: formality_preference, scale: 0.5, offset: 0.1, min: 0.2, max: 0.5}
    """
    assert plan_of(rules, UserProfile(user_id="u", formality_preference=0.6)) == {
        "formality": [((8, 9), 0.4)]
    }
    assert plan_of(rules, UserProfile(user_id="u", formality_preference=1.0)) == {
        "formality": [((8, 9), 0.5)]
    }
    assert plan_of(rules, UserProfile(user_id="u", formality_preference=0.0)) == {
        "formality": [((8, 9), 0.2)]
    }
    d = engine(rules).decide(HI, U, None, S)
    assert d.plan.interventions == () and d.dropped[0].reason is DropReason.MISSING_VALUE


def test_rule_with_op_positions_overrides() -> None:
    rules = """
    - id: a
      when: {all: []}
      apply: [{vector: caution, op: ablate, positions: last_4, layers: "3-5"}]
    """
    (i,) = engine(rules).decide(HI, U, None, S).plan.interventions
    assert i.op.value == "ablate" and str(i.positions) == "last_4" and i.layers == (3, 4, 5)
    assert i.source == "a"
