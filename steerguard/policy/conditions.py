"""Conditions compiled at load into closures: `node(inp, evidence) -> bool`.

A node appends an Evidence for every predicate that held and contributed to the result.
`any` evaluates every branch (so each matching predicate is evidence); `all` stops at the
first false branch. A predicate that cannot be evaluated raises EvaluationError; with
`on_error: open` it is recorded and counts as not holding, with `closed` it propagates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from steerguard.policy.decision import Evidence
from steerguard.policy.errors import EvaluationError
from steerguard.policy.inputs import ToolState
from steerguard.policy.schema import (
    ActivationCond,
    AllCond,
    AnyCond,
    Condition,
    ContextCond,
    FieldPredicate,
    KeywordsCond,
    NotCond,
    ProfileCond,
    RegexCond,
    ToolCond,
    TurnsCond,
)
from steerguard.policy.textmatch import BoundedRegex, KeywordMatcher

MISSING: Any = object()
AUTO_THRESHOLD = 0.5  # probe scores are calibrated probabilities; 0.5 is the fitted threshold


@dataclass
class EvalInput:
    """One request, prepared once so that every rule reads the same views."""

    user: list[tuple[str, str]]  # [(source, text)] for the latest user message, or []
    system: list[tuple[str, str]]
    turns: list[tuple[str, str]]  # all non-system messages, oldest first
    tool: ToolState
    user_turns: int
    profile: Mapping[str, Any]
    context: Mapping[str, Any]
    scores: Mapping[str, float] | None
    on_error: str = "closed"
    errors: list[str] = field(default_factory=list)

    def texts(self, where: str, last: int | None) -> list[tuple[str, str]]:
        if where == "user":
            return self.user
        if where == "system":
            return self.system
        if where == "turns":
            return self.turns[-(last or 1) :]
        r = self.tool.last_result
        return [(f"tool_result.{self.tool.last_tool}", r)] if r is not None else []


Node = Callable[[EvalInput, list[Evidence]], bool]


def _guard(leaf: Node, label: str) -> Node:
    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        try:
            return leaf(inp, ev)
        except EvaluationError as e:
            if inp.on_error == "closed":
                raise
            inp.errors.append(f"{label}: {e}")
            return False

    return node


def compile_condition(cond: Condition) -> Node:
    if isinstance(cond, AllCond):
        return _all([compile_condition(c) for c in cond.all])
    if isinstance(cond, AnyCond):
        return _any([compile_condition(c) for c in cond.any])
    if isinstance(cond, NotCond):
        return _not(compile_condition(cond.not_))
    if isinstance(cond, KeywordsCond):
        return _keywords(cond)
    if isinstance(cond, RegexCond):
        return _guard(_regex(cond), f"regex {cond.regex.pattern!r}")
    if isinstance(cond, TurnsCond):
        return _turns(cond)
    if isinstance(cond, ToolCond):
        return _tool(cond)
    if isinstance(cond, ProfileCond):
        return _field("profile", cond.profile)
    if isinstance(cond, ContextCond):
        return _field("context", cond.context)
    if isinstance(cond, ActivationCond):
        a = cond.activation
        return _guard(_activation(a.condition, a.threshold), f"activation {a.condition!r}")
    raise TypeError(f"unknown condition {type(cond).__name__}")


def _all(children: list[Node]) -> Node:
    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        local: list[Evidence] = []
        for child in children:
            if not child(inp, local):
                return False
        ev.extend(local)
        return True

    return node


def _any(children: list[Node]) -> Node:
    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        hit = False
        for child in children:
            hit = child(inp, ev) or hit
        return hit

    return node


def _not(child: Node) -> Node:
    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        if child(inp, []):
            return False
        ev.append(
            Evidence(predicate="not", source="condition", detail="inner condition did not hold")
        )
        return True

    return node


def _keywords(cond: KeywordsCond) -> Node:
    spec = cond.keywords
    matcher = KeywordMatcher(spec.words)

    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        hit = False
        for source, text in inp.texts(spec.in_, spec.last):
            span = matcher.search(text)
            if span:
                hit = True
                ev.append(
                    Evidence(
                        predicate="keywords",
                        source=source,
                        quote=text[span[0] : span[1]],
                        span=span,
                    )
                )
        return hit

    return node


def _regex(cond: RegexCond) -> Node:
    spec = cond.regex
    rx = BoundedRegex(spec.pattern, spec.ignore_case)

    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        hit = False
        for source, text in inp.texts(spec.in_, spec.last):
            span = rx.search(text)
            if span:
                hit = True
                ev.append(
                    Evidence(
                        predicate="regex",
                        source=source,
                        detail=f"/{spec.pattern}/ matched",
                        quote=text[span[0] : span[1]],
                        span=span,
                    )
                )
        return hit

    return node


def _turns(cond: TurnsCond) -> Node:
    lo, hi = cond.turns.min, cond.turns.max

    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        n = inp.user_turns
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            return False
        ev.append(Evidence(predicate="turns", source="conversation", detail=f"{n} user turns"))
        return True

    return node


def _tool(cond: ToolCond) -> Node:
    spec = cond.tool
    requested = set(spec.requested) if spec.requested is not None else None
    last_tool = set(spec.last_tool) if spec.last_tool is not None else None

    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        t = inp.tool
        local: list[Evidence] = []
        if requested is not None:
            hits = [n for n in t.requested if n in requested]
            if not hits:
                return False
            local.append(
                Evidence(predicate="tool.requested", source="tool", detail=", ".join(hits))
            )
        if last_tool is not None:
            if t.last_tool not in last_tool:
                return False
            local.append(
                Evidence(predicate="tool.last_tool", source="tool", detail=str(t.last_tool))
            )
        if spec.last_failed is not None:
            if t.last_result is None or t.last_failed != spec.last_failed:
                return False
            state = "failed" if t.last_failed else "succeeded"
            local.append(
                Evidence(
                    predicate="tool.last_failed", source="tool", detail=f"{t.last_tool} {state}"
                )
            )
        ev.extend(local)
        return True

    return node


def _field_test(pred: FieldPredicate) -> Callable[[Any], bool]:
    """A test specialised per operator at load; list-valued fields match on any element."""
    op = pred.op
    if op == "exists":
        want = bool(pred.exists)
        return lambda v: (v is not MISSING) == want
    if op == "equals":
        target = pred.equals
        return lambda v: (
            v is not MISSING
            and (
                target in v
                if isinstance(v, list)
                else v
                == target  # types match: values and literals are checked against the declaration
            )
        )
    if op == "in":
        allowed = set(pred.in_ or [])
        return lambda v: (
            v is not MISSING
            and (any(x in allowed for x in v) if isinstance(v, list) else v in allowed)
        )
    r = pred.range
    assert r is not None
    lo = -math.inf if r.min is None else r.min
    hi = math.inf if r.max is None else r.max
    return lambda v: isinstance(v, int | float) and not isinstance(v, bool) and lo <= v <= hi


def _field(scope: str, pred: FieldPredicate) -> Node:
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
        ev.append(Evidence(predicate=predicate, source=source, detail=f"{name} = {shown}"))
        return True

    return node


def _activation(name: str, threshold: str | float) -> Node:
    t = AUTO_THRESHOLD if threshold == "auto" else float(threshold)
    label = "auto (calibrated)" if threshold == "auto" else f"{t:.3f}"

    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        score = inp.scores.get(name) if inp.scores is not None else None
        if score is None:
            raise EvaluationError(f"no activation score for {name!r} was supplied")
        if not 0.0 <= score <= 1.0:
            raise EvaluationError(f"activation score {score!r} for {name!r} is not in [0, 1]")
        if score < t:
            return False
        ev.append(
            Evidence(
                predicate="activation",
                source=f"activation.{name}",
                detail=f"score {score:.3f} >= threshold {label}",
            )
        )
        return True

    return node
