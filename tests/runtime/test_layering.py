"""The data path points one way: `steerguard.runtime` sits at the bottom with the per-model
directions it reads, and imports nothing above it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "steerguard"
ABOVE_RUNTIME = {"policy", "audit", "vectors", "pipeline", "chat", "langchain", "server",
                 "telemetry", "cli", "eval", "probes", "root", "examples"}
# what the bottom layers may use of steerguard besides themselves
BASE = {"errors", "canonical", "home", "lazy", "resources"}  # leaves: import no steerguard module


def _imports(path: Path) -> set[str]:
    """Every steerguard module `path` imports, at the top, inside functions, or for typing."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in out if m == "steerguard" or m.startswith("steerguard.")}


def _first_parts(modules: set[str]) -> set[str]:
    return {m.split(".")[1] for m in modules if m.count(".") >= 1}


def test_runtime_imports_nothing_above_it() -> None:
    for path in sorted((PACKAGE / "runtime").rglob("*.py")):
        wrong = _first_parts(_imports(path)) & ABOVE_RUNTIME
        assert not wrong, f"{path.relative_to(PACKAGE)} imports steerguard.{sorted(wrong)}"


def test_directions_sit_below_the_runtime() -> None:
    for path in sorted((PACKAGE / "directions").rglob("*.py")):
        used = _first_parts(_imports(path)) - {"directions"}
        assert used <= BASE, f"{path.relative_to(PACKAGE)} imports steerguard.{sorted(used - BASE)}"


def test_the_walk_sees_imports_inside_functions_and_for_typing(tmp_path: Path) -> None:
    probe = tmp_path / "m.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from steerguard.policy import engine\n"
                     "def f():\n    import steerguard.vectors.library\n")
    assert _first_parts(_imports(probe)) == {"policy", "vectors"}
