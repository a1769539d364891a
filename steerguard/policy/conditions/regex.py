"""`regex: {pattern, ignore_case, in, last}`: a bounded regular expression (textmatch.py) finds
a match. The evidence names the pattern and quotes the matched text."""

from __future__ import annotations

from steerguard.policy.conditions.base import (
    CheckContext,
    CompileChild,
    ConditionKind,
    Node,
    TextSource,
    guard,
    text_search,
)
from steerguard.policy.errors import PolicyIssue
from steerguard.policy.specbase import Spec
from steerguard.policy.textmatch import BoundedRegex


class RegexSpec(TextSource):
    pattern: str
    ignore_case: bool = True


class RegexCond(Spec):
    regex: RegexSpec


def compile_regex(spec: RegexSpec, _: CompileChild) -> Node:
    rx = BoundedRegex(spec.pattern, spec.ignore_case)
    leaf = text_search(spec, rx.search, "regex", detail=f"/{spec.pattern}/ matched")
    return guard(leaf, f"regex {spec.pattern!r}")


def check_regex(spec: RegexSpec, where: CheckContext) -> list[PolicyIssue]:
    try:
        BoundedRegex(spec.pattern, spec.ignore_case)
    except ValueError as e:
        return [where.issue(("regex", "pattern"), str(e), value=spec.pattern,
                            expected="a valid regular expression")]
    return []


KINDS = (
    ConditionKind(name="regex", model=RegexCond, compile=compile_regex, quotes_text=True,
                  check=check_regex),
)
