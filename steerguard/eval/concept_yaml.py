"""Write `recommended_strength` and `default_layers` into concept.yaml, keeping the rest.

A line edit rather than a YAML round trip, so comments, order and quoting survive.
"""

from __future__ import annotations

import re
from pathlib import Path


def _render(value: float | list[int] | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return repr(round(float(value), 4))


def set_keys(path: Path, values: dict[str, float | list[int] | None]) -> None:
    """Replace each top-level `key:` line (or append it) with the rendered value."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for key, value in values.items():
        line = f"{key}: {_render(value)}"
        pattern = re.compile(rf"^{re.escape(key)}\s*:")
        hits = [i for i, text in enumerate(lines) if pattern.match(text)]
        if hits:
            lines[hits[0]] = line
        else:
            lines.append(line)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
