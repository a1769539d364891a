"""Policy errors that name the file, line, column, rule and field, and what was expected."""

from __future__ import annotations

from dataclasses import dataclass

from steerguard.errors import SteerguardError


@dataclass(frozen=True)
class PolicyIssue:
    """One mistake in a policy file. `line` and `column` are 1-based (as editors show them)."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    rule: str | None = None
    field: str | None = None
    value: object = None
    expected: str | None = None

    def __str__(self) -> str:
        where = self.file or "<policy>"
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        parts = [where]
        if self.rule:
            parts.append(f"rule {self.rule!r}")
        if self.field:
            parts.append(f"field {self.field}")
        text = ": ".join([", ".join(parts), self.message])
        if self.value is not None:
            text += f" (got {self.value!r})"
        if self.expected:
            text += f"; expected {self.expected}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "rule": self.rule,
            "field": self.field,
            "message": self.message,
            "value": self.value if isinstance(self.value, str | int | float | bool) else None,
            "expected": self.expected,
        }


class PolicyError(SteerguardError):
    """A policy bundle (or a policy test file) has one or more mistakes; nothing was loaded."""

    def __init__(self, issues: list[PolicyIssue] | tuple[PolicyIssue, ...]) -> None:
        self.issues = tuple(issues)
        n = len(self.issues)
        head = f"{n} error{'s' if n != 1 else ''} in policy"
        super().__init__(head + ":\n" + "\n".join(f"  {i}" for i in self.issues))


class ProfileError(SteerguardError):
    """A user profile or request context does not fit the fields the bundle declares."""


class EvaluationError(SteerguardError):
    """A predicate could not be evaluated (regex timeout, missing activation score).

    The bundle's `on_error` decides what happens: open ignores the predicate (it does not
    hold), closed returns a decision with `failed_closed=True` and an empty plan.
    """
