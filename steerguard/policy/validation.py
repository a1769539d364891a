"""Validate data against a schema model; each pydantic error becomes an issue at the position
of the value in its YAML file, naming the value and what was expected."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from steerguard.policy.errors import PolicyIssue
from steerguard.policy.yamlsource import Loc, YamlDoc

M = TypeVar("M", bound=BaseModel)


def validate(
    model: type[M],
    data: Any,
    doc: YamlDoc,
    prefix: Loc,
    out: list[PolicyIssue],
    rule: str | None = None,
) -> M | None:
    """The validated model, or None with its mistakes appended to `out`."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        merged: dict[tuple[object, ...], PolicyIssue] = {}
        for err in e.errors():
            issue = doc.issue((*prefix, *err["loc"]), describe(err), rule=rule)
            key = (
                issue.line,
                issue.column,
                issue.field,
                err["type"] in ("missing", "extra_forbidden") and issue.message,
            )
            if key in merged:
                # An untagged union reports one error per member for one wrong value.
                first = merged[key]
                merged[key] = PolicyIssue(
                    **{**first.__dict__, "message": f"{first.message}, or {issue.message.lower()}"}
                )
            else:
                merged[key] = issue
        out.extend(merged.values())
        return None


def describe(err: Any) -> str:
    """A message for one pydantic error, naming the offending value."""
    kind, loc, value = err["type"], err["loc"], err.get("input")
    last = next((x for x in reversed(loc) if isinstance(x, str)), "")
    if kind == "extra_forbidden":
        return f"unknown field {last!r}"
    if kind == "missing":
        return f"missing required field {last!r}"
    msg = err["msg"].removeprefix("Value error, ")
    shown = value if isinstance(value, str | int | float | bool) else None
    if isinstance(shown, str) and len(shown) > 80:
        shown = shown[:77] + "..."
    suffix = f" (got {shown!r})" if shown is not None else ""
    return msg + suffix
