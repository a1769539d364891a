"""`all: [conditions]`: every branch holds (an empty list always holds). Stops at the first
branch that does not; the evidence is that of every branch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from steerguard.policy.conditions.base import CompileChild, EvalInput, Node, branching_kind
from steerguard.policy.decision import Evidence
from steerguard.policy.specbase import Spec

if TYPE_CHECKING:
    from steerguard.policy.schema import Condition


class AllCond(Spec):
    all: list[Condition]


def compile_all(conds: list[Any], compile_child: CompileChild) -> Node:
    children = [compile_child(c) for c in conds]

    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        local: list[Evidence] = []
        for child in children:
            if not child(inp, local):
                return False
        ev.extend(local)
        return True

    return node


KINDS = (branching_kind("all", AllCond, compile_all),)
