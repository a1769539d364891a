"""YAML with positions: keep the composed node tree so any error can name line and column."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

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
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == item:
                return value
    if isinstance(node, yaml.SequenceNode) and isinstance(item, int):
        return node.value[item] if 0 <= item < len(node.value) else None
    return None


def _duplicate_keys(node: yaml.Node, file: str, out: list[PolicyIssue]) -> None:
    # PyYAML silently keeps the last of two equal keys; a policy author never means that.
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    out.append(
                        PolicyIssue(
                            message=f"duplicate key {key.value!r}",
                            file=file,
                            line=key.start_mark.line + 1,
                            column=key.start_mark.column + 1,
                            expected="each key once per mapping",
                        )
                    )
                seen.add(key.value)
            _duplicate_keys(value, file, out)
    elif isinstance(node, yaml.SequenceNode):
        for value in node.value:
            _duplicate_keys(value, file, out)


def parse_yaml(text: str, file: str) -> YamlDoc:
    """Parse one YAML document; syntax errors become issues with the parser's position."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        return YamlDoc(
            file=file,
            data=None,
            root=None,
            issues=[
                PolicyIssue(
                    message=f"YAML syntax: {e.problem or e.context}",
                    file=file,
                    line=mark.line + 1 if mark else None,
                    column=mark.column + 1 if mark else None,
                    expected="valid YAML",
                )
            ],
        )
    doc = YamlDoc(file=file, data=data, root=root)
    if root is not None:
        _duplicate_keys(root, file, doc.issues)
    return doc
