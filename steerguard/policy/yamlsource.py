"""YAML with positions: keep the composed node tree so any error can name line and column."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from steerguard.inputfiles import MAX_YAML_BYTES, InputFileError, Problem, read_text
from steerguard.inputfiles import parse_yaml as parse_bounded
from steerguard.policy.errors import PolicyIssue

Loc = tuple[str | int, ...]


@dataclass
class YamlDoc:
    """Parsed data plus the node tree it came from."""

    file: str
    data: Any
    root: yaml.Node | None
    issues: list[PolicyIssue] = field(default_factory=list)

    def locate(self, loc: Loc) -> tuple[int | None, int | None, str]:
        """Line, column (1-based) and the YAML path of the deepest node `loc` reaches.

        Items of `loc` that are not keys or indexes in the document (pydantic's union tags
        such as 'number' or 'function-after[...]') are skipped.
        """
        node = self.root
        path: list[str] = []
        for item in loc:
            nxt = _child(node, item)
            if nxt is None:
                continue
            node = nxt
            path.append(f"[{item}]" if isinstance(item, int) else f".{item}")
        text = "".join(path).lstrip(".")
        if node is None:
            return None, None, text
        return node.start_mark.line + 1, node.start_mark.column + 1, text

    def issue(self, loc: Loc, message: str, **kw: Any) -> PolicyIssue:
        line, col, path = self.locate(loc)
        kw.setdefault("field", path or None)
        return PolicyIssue(message=message, file=self.file, line=line, column=col, **kw)


def _child(node: yaml.Node | None, item: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(item, str):
        # from the end: after a merge (<<) the mapping's own keys come last, and they win
        for key, value in reversed(node.value):
            if isinstance(key, yaml.ScalarNode) and key.value == item:
                return value
    if isinstance(node, yaml.SequenceNode) and isinstance(item, int):
        return node.value[item] if 0 <= item < len(node.value) else None
    return None


def issue_of(problem: Problem) -> PolicyIssue:
    return PolicyIssue(message=problem.message, file=problem.file, line=problem.line,
                       column=problem.column, field=problem.field, expected=problem.expected)


def parse_yaml(text: str, file: str) -> YamlDoc:
    """Parse one bounded YAML document (steerguard.inputfiles); syntax, encoding and limit
    errors, duplicate keys and non-finite numbers become issues with their positions."""
    try:
        tree = parse_bounded(text, file)
    except InputFileError as e:
        return YamlDoc(file=file, data=None, root=None, issues=[issue_of(p) for p in e.problems])
    return YamlDoc(file=file, data=tree.data, root=tree.root,
                   issues=[issue_of(p) for p in tree.problems])


def read_yaml(path: Path) -> YamlDoc:
    """A policy author's YAML file (a bundle, a policy test, a concept.yaml), bounded."""
    try:
        text = read_text(path, MAX_YAML_BYTES)
    except InputFileError as e:
        return YamlDoc(file=str(path), data=None, root=None,
                       issues=[issue_of(p) for p in e.problems])
    return parse_yaml(text, str(path))
