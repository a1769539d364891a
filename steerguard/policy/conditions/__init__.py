"""Condition kinds: one module each in this package, found and registered on import.

`steerguard.policy.schema` builds the `Condition` union from the registry, `bundle.py`
compiles with `compile_condition`, `checks.py` runs each kind's own check. A new kind is one
module here that defines `KINDS` (see base.py), and its tests.
"""

from __future__ import annotations

import importlib
import pkgutil

from steerguard.policy.conditions.base import (
    CheckContext,
    ConditionKind,
    EvalInput,
    Node,
    compile_condition,
    condition_union,
    kind_of,
    kinds,
    register,
    walk,
)
from steerguard.policy.fields import MISSING

__all__ = [
    "MISSING",
    "CheckContext",
    "ConditionKind",
    "EvalInput",
    "Node",
    "compile_condition",
    "condition_union",
    "kind_of",
    "kinds",
    "register",
    "walk",
]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base" and not _module.name.startswith("_"):
        for _kind in getattr(importlib.import_module(f"{__name__}.{_module.name}"), "KINDS", ()):
            register(_kind)
