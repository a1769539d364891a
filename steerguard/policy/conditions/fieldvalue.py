"""`profile: {...}` and `context: {...}`: one predicate (equals, in, range or exists) over a
declared profile or context field. List-valued fields match on any element. The evidence
shows the field's value (the application's data about the user, not conversation text) in
Evidence.value, which the audit withholds without store_user_id."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pydantic import Field, model_validator

from steerguard.policy.conditions.base import (
    CheckContext,
    CompileChild,
    ConditionKind,
    EvalInput,
    Node,
)
from steerguard.policy.decision import Evidence
from steerguard.policy.errors import PolicyIssue
from steerguard.policy.fields import MISSING, literal_problem
from steerguard.policy.specbase import Bounds, FieldSpec, Scalar, Spec


class RangeSpec(Bounds):
    NEEDED_BY = "range"


class FieldPredicate(Spec):
    """Exactly one of equals / in / range / exists over a declared field."""

    field: str
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    range: RangeSpec | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _one_op(self) -> FieldPredicate:
        ops = [k for k in ("equals", "in_", "range", "exists") if getattr(self, k) is not None]
        if len(ops) != 1:
            raise ValueError("needs exactly one of equals, in, range, exists")
        return self

    @property
    def op(self) -> str:
        for k in ("equals", "in_", "range", "exists"):
            if getattr(self, k) is not None:
                return k.rstrip("_")
        raise AssertionError("validated to have one op")


class ProfileCond(Spec):
    profile: FieldPredicate


class ContextCond(Spec):
    context: FieldPredicate


def _field_test(pred: FieldPredicate) -> Callable[[Any], bool]:
    """A test specialised per operator at load."""
    op = pred.op
    if op == "exists":
        want = bool(pred.exists)
        return lambda v: (v is not MISSING) == want
    if op == "equals":
        target = pred.equals  # types match: values and literals are checked against the decl
        return lambda v: v is not MISSING and (
            target in v if isinstance(v, list) else v == target
        )
    if op == "in":
        allowed = set(pred.in_ or [])
        return lambda v: v is not MISSING and (
            any(x in allowed for x in v) if isinstance(v, list) else v in allowed
        )
    r = pred.range
    assert r is not None
    lo = -math.inf if r.min is None else r.min
    hi = math.inf if r.max is None else r.max
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi


def _compile(scope: str) -> Callable[[FieldPredicate, CompileChild], Node]:
    def compile_field(pred: FieldPredicate, _: CompileChild) -> Node:
        name = pred.field
        source = f"{scope}.{name}"
        predicate = f"{scope}.{pred.op}"
        test = _field_test(pred)
        use_profile = scope == "profile"

        def node(inp: EvalInput, ev: list[Evidence]) -> bool:
            value = (inp.profile if use_profile else inp.context).get(name, MISSING)
            if not test(value):
                return False
            shown = "absent" if value is MISSING else repr(value)
            ev.append(Evidence(predicate=predicate, source=source, detail=f"{name} =",
                               value=shown))
            return True

        return node

    return compile_field


def _one_of(names: object) -> str:
    items = sorted(names)  # type: ignore[call-overload]
    return "one of: " + ", ".join(items) if items else "none is declared"


def _check(scope: str) -> Callable[[FieldPredicate, CheckContext], list[PolicyIssue]]:
    def check_field(pred: FieldPredicate, where: CheckContext) -> list[PolicyIssue]:
        decls: dict[str, FieldSpec] = getattr(where.spec, scope)
        fs = decls.get(pred.field)
        if fs is None:
            return [where.issue((scope, "field"), f"unknown {scope} field {pred.field!r}",
                                expected=f"a field declared under '{scope}', " + _one_of(decls))]
        out = []
        if pred.range is not None and fs.type not in ("number", "integer"):
            out.append(where.issue((scope, "range"),
                                   f"range needs a number field; {pred.field!r} is {fs.type}",
                                   expected="equals, in or exists"))
        literals: list[tuple[tuple[str | int, ...], Scalar]] = (
            [(("equals",), pred.equals)] if pred.equals is not None else [])
        literals += [(("in", i), v) for i, v in enumerate(pred.in_ or [])]
        for sub, value in literals:
            problem = literal_problem(fs, value)
            if problem:
                out.append(where.issue((scope, *sub),
                                       f"value can never match {scope} field {pred.field!r}",
                                       value=value, expected=problem.removeprefix("expected ")))
        return out

    return check_field


KINDS = (
    ConditionKind(name="profile", model=ProfileCond, compile=_compile("profile"),
                  quotes_text=False, check=_check("profile")),
    ConditionKind(name="context", model=ContextCond, compile=_compile("context"),
                  quotes_text=False, check=_check("context")),
)
