"""`turns: {min, max}`: the number of user turns so far lies within the bounds."""

from __future__ import annotations

from pydantic import Field

from steerguard.policy.conditions.base import CompileChild, ConditionKind, EvalInput, Node
from steerguard.policy.decision import Evidence
from steerguard.policy.specbase import Bounds, Spec


class TurnsSpec(Bounds):
    """Number of user turns so far."""

    NEEDED_BY = "turns"
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)


class TurnsCond(Spec):
    turns: TurnsSpec


def compile_turns(spec: TurnsSpec, _: CompileChild) -> Node:
    lo, hi = spec.min, spec.max

    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        n = inp.user_turns
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            return False
        ev.append(Evidence(predicate="turns", source="conversation", detail=f"{n} user turns"))
        return True

    return node


KINDS = (ConditionKind(name="turns", model=TurnsCond, compile=compile_turns, quotes_text=False),)
