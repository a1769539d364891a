"""The bounded readers of files people write: size, encoding, YAML bombs, duplicate keys,
non-finite numbers and JSON lines; each problem says where and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerguard.inputfiles import (
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    InputFileError,
    json_lines,
    load_yaml,
    parse_yaml,
    read_text,
)


def _problem(text: str) -> str:
    with pytest.raises(InputFileError) as e:
        parse_yaml(text, "f.yaml")
    (problem,) = e.value.problems
    return str(problem)


def test_an_alias_bomb_is_refused_while_composing() -> None:
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    message = _problem("\n".join(levels))
    assert message.startswith("f.yaml:5:")  # 9**5 nodes: refused at the fifth level
    assert f"more than {MAX_YAML_NODES} YAML nodes" in message


def test_aliases_within_the_limit_share_one_built_object() -> None:
    tree = parse_yaml("w: &w [a, b]\nx: *w\ny: {<<: {k: 1}, k: 2}\n", "f.yaml")
    assert tree.data == {"w": ["a", "b"], "x": ["a", "b"], "y": {"k": 2}}
    assert tree.data["w"] is tree.data["x"] and tree.problems == []  # a merge is no duplicate


def test_nesting_is_bounded_in_block_style_and_through_aliases() -> None:
    deep = "".join(" " * i + f"k{i}:\n" for i in range(MAX_YAML_DEPTH + 1)) + "x\n"
    assert f"nested more than {MAX_YAML_DEPTH} levels deep" in _problem(deep)
    half = MAX_YAML_DEPTH // 2 + 2
    nested = "a: &a " + "[" * half + "]" * half + "\n"
    assert "nested more than" in _problem(nested + "b: " + "[" * half + "*a" + "]" * half)
    parse_yaml(nested, "f.yaml")  # on its own it fits


@pytest.mark.parametrize("text,expected", [
    ("a: &x [1, *x]\n", "f.yaml:1:11: alias *x refers to a node that contains it"),
    ("a: *nope\n", "f.yaml:1:4: alias *nope names no anchor"),
    ("a: 1\n---\nb: 2\n", "f.yaml:2:1: a second YAML document"),
    ("a: 2026-13-45\n", "f.yaml:1:4: cannot read timestamp '2026-13-45'"),
    ("a: !!float abc\n", "f.yaml:1:4: cannot read float 'abc'"),
    ("a: " + "7" * 5000 + "\n", "f.yaml:1:4: cannot read int"),
    ("a: !!python/name:os.system\n", "f.yaml:1:4: YAML: could not determine a constructor"),
    ("éé: b\x07\n", "f.yaml:1:6: character #x0007 is not allowed in YAML"),
    ("a: [1\n", "f.yaml:2:1: YAML syntax"),
    ("a: \ud800\n", "f.yaml:1:4: text holds a lone surrogate character"),
])
def test_bad_yaml_is_one_positioned_problem(text: str, expected: str) -> None:
    assert _problem(text).startswith(expected)


def test_duplicate_keys_and_non_finite_numbers_are_all_listed_with_both_lines() -> None:
    tree = parse_yaml("a:\n  b: 1\n  c: [1, .inf]\n  b: 2\nd: .NaN\ne: 1.0e+400\n", "f.yaml")
    assert [str(p) for p in tree.problems] == [
        "f.yaml:3:10: field a.c[1]: non-finite number .inf; expected a finite number",
        "f.yaml:4:3: field a: duplicate key 'b' (first at line 2); expected each key once per "
        "mapping",
        "f.yaml:5:4: field d: non-finite number .NaN; expected a finite number",
        "f.yaml:6:4: field e: non-finite number 1.0e+400; expected a finite number",
    ]


def test_files_too_large_or_not_utf8_are_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: 1\n" * 1000)
    with pytest.raises(InputFileError, match="larger than 100 bytes"):
        read_text(big, 100)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(InputFileError, match=r"bad.yaml:2:7: not UTF-8 text: byte 0xe9"):
        load_yaml(bad)
    with pytest.raises(InputFileError, match="cannot read: No such file"):
        load_yaml(tmp_path / "missing.yaml")
    with pytest.raises(InputFileError, match="cannot read: Is a directory"):
        load_yaml(tmp_path)


def test_json_lines_name_every_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{"a": NaN}\n{"a": \n' + "[" * 100_000 + "\n{\"b\": 2}\n")
    with pytest.raises(InputFileError) as e:
        json_lines(path)
    assert [(p.line, p.message.split(" (")[0]) for p in e.value.problems] == [
        (3, "non-finite number NaN"), (4, "not valid JSON"), (5, "JSON nested too deeply")]
    path.write_text('{"a": 1}\n\n{"b": "\u2028"}\n')  # a JSON string may hold U+2028
    assert json_lines(path) == [(1, {"a": 1}), (3, {"b": "\u2028"})]
