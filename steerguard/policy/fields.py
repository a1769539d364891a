"""Declared profile and context fields: where each value lives, and checking values against
the declaration. Rules can read declared fields only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from steerguard.policy.specbase import FieldSpec, Scalar

MISSING: Any = object()  # a field the request does not carry

# Built-in fields and the declared types they allow.
PROFILE_BUILTINS: dict[str, tuple[str, ...]] = {
    "user_id": ("string", "enum"),
    "roles": ("list",),
    "age_band": ("string", "enum"),
    "locale": ("string", "enum"),
}
CONTEXT_BUILTINS: dict[str, tuple[str, ...]] = {
    "channel": ("string", "enum"),
    "locale": ("string", "enum"),
}
PROFILE_MAPS = {"preferences": None, "consent": ("boolean",)}  # dotted: preferences.tone
RESERVED = {"tool_state", "extra", "model_config"}

Getter = Callable[[BaseModel], Any]


def declaration_problem(scope: str, name: str, spec: FieldSpec) -> str | None:
    """Why a declared field name/type cannot work, or None."""
    builtins = PROFILE_BUILTINS if scope == "profile" else CONTEXT_BUILTINS
    if name in RESERVED:
        return f"{name!r} is reserved"
    if name in builtins and spec.type not in builtins[name]:
        return f"built-in field {name!r} must be declared as {' or '.join(builtins[name])}"
    if "." in name:
        head, _, tail = name.partition(".")
        if scope != "profile" or head not in PROFILE_MAPS or not tail:
            return "dotted names are only preferences.<key> or consent.<key> on the profile"
        allowed = PROFILE_MAPS[head]
        if allowed and spec.type not in allowed:
            return f"{head}.* fields must be declared as {' or '.join(allowed)}"
    return None


def getter(name: str) -> Getter:
    head, dot, tail = name.partition(".")
    if dot:
        return lambda obj: getattr(obj, head).get(tail, MISSING)

    def get(obj: BaseModel) -> Any:
        if name in type(obj).model_fields:
            value = getattr(obj, name)
        else:
            value = (obj.model_extra or {}).get(name, MISSING)
        if value is None or (name == "roles" and value == ()):
            return MISSING
        return list(value) if isinstance(value, tuple) else value

    return get


def value_problem(spec: FieldSpec, value: Any) -> str | None:
    """Why `value` does not fit the declaration, or None."""

    def scalar_ok(v: Any) -> str | None:
        t = spec.type
        if t == "boolean":
            return None if isinstance(v, bool) else "expected true or false"
        if t in ("number", "integer"):
            if isinstance(v, bool) or not isinstance(v, int | float):
                return f"expected a{'n integer' if t == 'integer' else ' number'}"
            if t == "integer" and not float(v).is_integer():
                return "expected an integer"
            if (spec.min is not None and v < spec.min) or (spec.max is not None and v > spec.max):
                return f"expected a value in [{spec.min}, {spec.max}]"
            return None
        if not isinstance(v, str):
            return "expected a string"
        if spec.values is not None and v not in spec.values:
            return "expected one of: " + ", ".join(map(str, spec.values))
        return None

    if spec.type == "list":
        if not isinstance(value, list | tuple):
            return "expected a list"
        for v in value:
            problem = scalar_ok(v)
            if problem:
                return f"item {v!r}: {problem}"
        return None
    return scalar_ok(value)


def literal_problem(spec: FieldSpec, value: Scalar) -> str | None:
    """Why a literal in a rule (equals / in) can never match the declared field."""
    if spec.type == "list":
        probe = FieldSpec(type="string", values=spec.values)
        return value_problem(probe, value)
    return value_problem(spec, value)
