"""`any: [conditions]`: at least one branch holds. Every branch is evaluated, so each matching
predicate is evidence."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from steerguard.policy.conditions.base import CompileChild, EvalInput, Node, branching_kind
from steerguard.policy.decision import Evidence
from steerguard.policy.specbase import Spec

if TYPE_CHECKING:
    from steerguard.policy.schema import Condition


class AnyCond(Spec):
    any: list[Condition] = Field(min_length=1)


def compile_any(conds: list[Any], compile_child: CompileChild) -> Node:
    children = [compile_child(c) for c in conds]

    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        hit = False
        for child in children:
            hit = child(inp, ev) or hit
        return hit

    return node


KINDS = (branching_kind("any", AnyCond, compile_any),)
