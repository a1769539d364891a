"""`not: condition`: the inner condition does not hold. Its evidence is dropped (it did not
hold), so nothing it matched is quoted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from steerguard.policy.conditions.base import CompileChild, ConditionKind, EvalInput, Node
from steerguard.policy.decision import Evidence
from steerguard.policy.specbase import Spec

if TYPE_CHECKING:
    from steerguard.policy.schema import Condition


class NotCond(Spec):
    not_: Condition = Field(alias="not")


def compile_not(cond: Any, compile_child: CompileChild) -> Node:
    child = compile_child(cond)

    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        if child(inp, []):
            return False
        ev.append(
            Evidence(predicate="not", source="condition", detail="inner condition did not hold")
        )
        return True

    return node


KINDS = (
    ConditionKind(
        name="not", model=NotCond, compile=compile_not, quotes_text=False,
        children=lambda cond: [(("not",), cond)],
    ),
)
