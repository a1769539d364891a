"""`turns: {min, max}`: the number of user turns so far lies within the bounds."""

from __future__ import annotations

from pydantic import Field, model_validator

from steerguard.policy.conditions.base import CompileChild, ConditionKind, EvalInput, Node
from steerguard.policy.decision import Evidence
from steerguard.policy.specbase import Spec


class TurnsSpec(Spec):
    """Number of user turns so far."""

    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> TurnsSpec:
        if self.min is None and self.max is None:
            raise ValueError("turns needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


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
