"""Bounded readers for files people write (policy bundles and their tests, concept and
condition datasets): a size cap, UTF-8 with the position of a bad byte, YAML that refuses
alias, size and nesting bombs, and JSON lines. A problem names the file, line, column and
field, and what was expected; nothing here raises anything but InputFileError on bad input.

Limits (docs/policy.md states them): a YAML file holds at most MAX_YAML_BYTES and
MAX_YAML_NODES nodes, an alias counting as every node it repeats, nested at most
MAX_YAML_DEPTH deep; a JSON lines file holds at most MAX_JSONL_BYTES."""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from steerguard.errors import SteerguardError

MAX_YAML_BYTES = 256 * 1024
MAX_YAML_NODES = 50_000
MAX_YAML_DEPTH = 64
MAX_JSONL_BYTES = 16 * 1024 * 1024
_MAX_PROBLEMS = 20  # per file: enough to fix a batch, short enough to read

_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# libyaml when PyYAML was built with it (about 5x faster to parse), else the pure reader.
_FAST = hasattr(yaml, "CSafeLoader")
_BaseLoader: type = yaml.CSafeLoader if _FAST else yaml.SafeLoader


@dataclass(frozen=True)
class Problem:
    """One mistake in an input file; `line` and `column` are 1-based."""

    file: str
    message: str
    line: int | None = None
    column: int | None = None
    field: str | None = None
    expected: str | None = None

    def __str__(self) -> str:
        where = self.file + (f":{self.line}:{self.column or 1}" if self.line else "")
        text = f"{where}: " + (f"field {self.field}: " if self.field else "") + self.message
        return text + (f"; expected {self.expected}" if self.expected else "")


class InputFileError(SteerguardError):
    """An input file cannot be used; `problems` says where and why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def _line_column(data: str | bytes, offset: int) -> tuple[int, int]:
    newline = "\n" if isinstance(data, str) else b"\n"
    line = data.count(newline, 0, offset) + 1  # type: ignore[arg-type]
    return line, offset - (data.rfind(newline, 0, offset) + 1) + 1  # type: ignore[arg-type]


def decode(data: bytes, file: str) -> str:
    """UTF-8 text, or an error at the first byte that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line, column = _line_column(data, e.start)
        raise InputFileError([Problem(
            file, f"not UTF-8 text: byte 0x{data[e.start]:02x} cannot be decoded",
            line, column, expected="a UTF-8 encoded text file")]) from None


def read_bytes(path: Path, limit: int) -> bytes:
    """The file's bytes, refusing one larger than `limit` without reading all of it."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise InputFileError([Problem(str(path), f"cannot read: {e.strerror or e}",
                                      expected="a readable file")]) from None
    if len(data) > limit:
        raise InputFileError([Problem(str(path), f"the file is larger than {limit} bytes",
                                      expected=f"at most {limit} bytes")])
    return data


def read_text(path: Path, limit: int) -> str:
    return decode(read_bytes(path, limit), str(path))


# ---------------------------------------------------------------------------------- YAML


@dataclass
class YamlTree:
    """One parsed YAML document: the node tree (positions) and the data built from it."""

    file: str
    root: yaml.Node | None
    data: Any
    problems: list[Problem]  # duplicate keys and non-finite numbers: all of them


@dataclass
class _Open:
    node: yaml.Node
    start: int  # expanded node count when it opened
    key: yaml.Node | None = None  # a mapping's key waiting for its value


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Composes from the parser's events with its own bounds, then builds with SafeLoader's
    constructors (aliases share one built object, so building is linear in the file)."""

    def __init__(self, text: str, file: str) -> None:
        super().__init__(text)
        self.file = file

    def fail(self, message: str, mark: Any, expected: str | None = None) -> InputFileError:
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        return InputFileError([Problem(self.file, message, line, column, expected=expected)])

    def compose_bounded(self) -> yaml.Node | None:
        self.get_event()  # stream start
        if self.check_event(yaml.StreamEndEvent):
            return None
        self.get_event()  # document start
        root = self._compose_node()
        self.get_event()  # document end
        if not self.check_event(yaml.StreamEndEvent):
            raise self.fail("a second YAML document", self.peek_event().start_mark,
                            "one document per file")
        return root

    def _compose_node(self) -> yaml.Node:
        """Iterative, so depth is bounded here and not by Python's stack."""
        anchors: dict[str, yaml.Node] = {}
        size: dict[int, int] = {}  # id(node) -> nodes it expands to, once closed
        height: dict[int, int] = {}
        stack: list[_Open] = []
        total = 0
        while True:
            event = self.get_event()
            node: yaml.Node
            if isinstance(event, yaml.AliasEvent):
                target = anchors.get(event.anchor)
                if target is None:
                    raise self.fail(f"alias *{event.anchor} names no anchor", event.start_mark,
                                    "an anchor (&name) defined before its alias")
                if id(target) not in size:
                    raise self.fail(f"alias *{event.anchor} refers to a node that contains it",
                                    event.start_mark, "no recursive aliases")
                total += size[id(target)]
                if len(stack) + height[id(target)] > MAX_YAML_DEPTH:
                    raise self._too_deep(event.start_mark)
                node = target
            elif isinstance(event, yaml.ScalarEvent):
                tag = event.tag
                if tag is None or tag == "!":
                    tag = self.resolve(yaml.ScalarNode, event.value, event.implicit)
                node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark,
                                       style=event.style)
                total += 1
                size[id(node)], height[id(node)] = 1, 1
                if event.anchor is not None:
                    anchors[event.anchor] = node
            elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                seq = isinstance(event, yaml.SequenceStartEvent)
                kind = yaml.SequenceNode if seq else yaml.MappingNode
                tag = event.tag
                if tag is None or tag == "!":
                    tag = self.resolve(kind, None, event.implicit)
                node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
                total += 1
                if event.anchor is not None:
                    anchors[event.anchor] = node  # open: an alias to it now is recursive
                stack.append(_Open(node, total - 1))
                if len(stack) > MAX_YAML_DEPTH:
                    raise self._too_deep(event.start_mark)
                self._check_total(total, event.start_mark)
                continue
            else:  # sequence or mapping end
                done = stack.pop()
                node = done.node
                node.end_mark = event.end_mark
                size[id(node)] = total - done.start
                children = (c for pair in node.value for c in
                            (pair if isinstance(pair, tuple) else (pair,)))
                height[id(node)] = 1 + max((height[id(c)] for c in children), default=0)
            self._check_total(total, event.start_mark)
            if not stack:
                return node
            parent = stack[-1]
            if isinstance(parent.node, yaml.SequenceNode):
                parent.node.value.append(node)
            elif parent.key is None:
                parent.key = node
            else:
                parent.node.value.append((parent.key, node))
                parent.key = None

    def _check_total(self, total: int, mark: Any) -> None:
        if total > MAX_YAML_NODES:
            raise self.fail(f"more than {MAX_YAML_NODES} YAML nodes (an alias counts as the "
                            "nodes it repeats)", mark, f"at most {MAX_YAML_NODES} nodes")

    def _too_deep(self, mark: Any) -> InputFileError:
        return self.fail(f"nested more than {MAX_YAML_DEPTH} levels deep", mark,
                         f"at most {MAX_YAML_DEPTH} levels")

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # Constructors raise plain ValueError for some scalars (a 5000-digit int, the date
        # 2026-13-45, `!!float abc`): give those the node's position like any other.
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as e:
            kind = node.tag.rsplit(":", 1)[-1]
            reason = str(e).split(";")[0]
            raise self.fail(f"cannot read {kind} {str(node.value)[:40]!r}: {reason}",
                            node.start_mark, f"a valid {kind}") from None
        except yaml.constructor.ConstructorError as e:
            raise self.fail(f"YAML: {e.problem}", e.problem_mark,
                            "plain YAML (no language-specific tags)") from None

    def tree_problems(self, root: yaml.Node) -> list[Problem]:
        """Duplicate keys and non-finite numbers, each node visited once (aliases too)."""
        out: list[Problem] = []
        seen: set[int] = set()
        todo: list[tuple[yaml.Node, str]] = [(root, "")]
        while todo and len(out) < _MAX_PROBLEMS:
            node, path = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, yaml.MappingNode):
                first: dict[tuple[str, str], yaml.Node] = {}
                for key, value in node.value:
                    name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                    if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                        earlier = first.setdefault((key.tag, key.value), key)
                        if earlier is not key:
                            out.append(self._at(
                                key, path, f"duplicate key {key.value!r} (first at line "
                                f"{earlier.start_mark.line + 1})", "each key once per mapping"))
                    todo.append((value, f"{path}.{name}" if path else name))
            elif isinstance(node, yaml.SequenceNode):
                todo.extend((v, f"{path}[{i}]") for i, v in enumerate(node.value))
            elif node.tag == _FLOAT_TAG:
                try:
                    number = self.construct_yaml_float(node)
                except ValueError:
                    continue  # building reports it, with its position
                if not math.isfinite(number):
                    out.append(self._at(node, path, f"non-finite number {node.value}",
                                        "a finite number"))
        return sorted(out, key=lambda p: (p.line or 0, p.column or 0))

    def _at(self, node: yaml.Node, path: str, message: str, expected: str) -> Problem:
        mark = node.start_mark
        return Problem(self.file, message, mark.line + 1, mark.column + 1, path or None,
                       expected)


def _reader_problem(e: yaml.reader.ReaderError, text: str, file: str) -> Problem:
    offset = e.position
    if _FAST:  # libyaml counts a reader error's position in bytes, the pure reader in chars
        offset = len(text.encode("utf-8")[:offset].decode("utf-8", "ignore"))
    line, column = _line_column(text, min(offset, len(text)))
    return Problem(file, f"character #x{e.character:04x} is not allowed in YAML"
                   if isinstance(e.character, int) else str(e.reason),
                   line, column, expected="printable characters")


def parse_yaml(text: str, file: str) -> YamlTree:
    """Parse one bounded YAML document; raises InputFileError for syntax, encoding and limits,
    and lists duplicate keys and non-finite numbers in `problems` (the data is built anyway,
    so every mistake of the file can be reported at once)."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:  # a lone surrogate in a str built by a program
        line, column = _line_column(text, e.start)
        raise InputFileError([Problem(file, "text holds a lone surrogate character", line,
                                      column, expected="valid Unicode text")]) from None
    if size > MAX_YAML_BYTES:
        raise InputFileError([Problem(file, f"{size} bytes is more than the limit of "
                                      f"{MAX_YAML_BYTES}", expected=f"at most "
                                      f"{MAX_YAML_BYTES} bytes of YAML")])
    loader: _Loader | None = None
    # Parsing allocates tens of thousands of objects and no reference cycles (recursive
    # aliases are refused): the cyclic collector would only rescan them, several times.
    collecting = gc.isenabled()
    gc.disable()
    try:
        loader = _Loader(text, file)
        root = loader.compose_bounded()
        problems = loader.tree_problems(root) if root is not None else []
        data = loader.construct_document(root) if root is not None else None
    except InputFileError:
        raise
    except yaml.reader.ReaderError as e:
        raise InputFileError([_reader_problem(e, text, file)]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = "YAML" if isinstance(e, yaml.constructor.ConstructorError) else "YAML syntax"
        raise InputFileError([Problem(
            file, f"{what}: {e.problem or e.context}", mark.line + 1 if mark else None,
            mark.column + 1 if mark else None, expected="valid YAML")]) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:
        raise InputFileError([Problem(file, f"cannot read the YAML: {e}",
                                      expected="valid YAML")]) from None
    finally:
        if collecting:
            gc.enable()
        if loader is not None:
            loader.dispose()
    return YamlTree(file, root, data, problems)


def load_yaml(path: Path, limit: int = MAX_YAML_BYTES) -> Any:
    """The data of a small YAML file, or InputFileError for any problem in it."""
    tree = parse_yaml(read_text(path, limit), str(path))
    if tree.problems:
        raise InputFileError(tree.problems)
    return tree.data


# ---------------------------------------------------------------------------- JSON lines


def _no_constant(name: str) -> float:
    raise ValueError(f"non-finite number {name}")


def json_lines(path: Path, limit: int = MAX_JSONL_BYTES) -> list[tuple[int, Any]]:
    """(line number, value) for each non-blank line; raises InputFileError listing the lines
    that are not JSON (all of them, up to a screenful)."""
    text = read_text(path, limit)
    problems: list[Problem] = []
    values: list[tuple[int, Any]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            values.append((number, json.loads(line, parse_constant=_no_constant)))
        except json.JSONDecodeError as e:
            problems.append(Problem(str(path), f"not valid JSON ({e.msg})", number, e.colno,
                                    expected="one JSON object per line"))
        except ValueError as e:
            problems.append(Problem(str(path), str(e), number, expected="finite numbers"))
        except RecursionError:
            problems.append(Problem(str(path), "JSON nested too deeply", number,
                                    expected="one flat JSON object per line"))
        if len(problems) >= _MAX_PROBLEMS:
            break
    if problems:
        raise InputFileError(problems)
    return values
