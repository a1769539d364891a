"""A corpus of broken and hostile bundles: mutations of the shipped one and generic broken
YAML, each with the words its error must contain. Written as a policy folder (the shipped
concept and condition datasets beside the cases), so every case is a folder bundle."""

from __future__ import annotations

import itertools
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerguard.resources import policies_dir

REPO = Path(__file__).resolve().parents[2]
SHIPPED = (policies_dir() / "support" / "bundle.yaml").read_text(encoding="utf-8")


def _alias_bomb(levels: int = 9, fold: int = 9) -> str:
    names = [f"l{i}" for i in range(levels + 1)]
    out = [f"{names[0]}: &{names[0]} [" + ", ".join(['"lol"'] * fold) + "]"]
    for prev, cur in itertools.pairwise(names):
        out.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * fold) + "]")
    return "\n".join(out) + "\nname: bomb\n"


def _shipped(old: str, new: str) -> str:
    assert old in SHIPPED, old
    return SHIPPED.replace(old, new, 1)


@dataclass(frozen=True)
class Case:
    bundle: bytes
    expect: str  # in the error's text
    line: bool = True  # the first error names a line
    files: dict[str, bytes] = field(default_factory=dict)  # beside bundle.yaml


def _text(text: str, expect: str, line: bool = True, **files: bytes) -> Case:
    return Case(text.encode(), expect, line, {k.replace("__", "/"): v for k, v in files.items()})


def _swap(old: str, new: str, expect: str, **kw: Any) -> Case:
    """The shipped bundle with its first `old` replaced by `new`."""
    return _text(_shipped(old, new), expect, **kw)


def _broken_dataset() -> dict[str, bytes]:
    good = (policies_dir() / "conditions/distress/train.jsonl").read_bytes().splitlines()
    train = b"\n".join([*good[:3], b'{"text": "x", "label": NaN}', b'{"text": 1, "label": true}',
                        b"[" * 50_000, *good[3:]]) + b"\n"
    return {"conditions/distress/train.jsonl": train,
            "conditions/distress/eval.jsonl": b'{"text": "ok", "label": true}\n\xff\n',
            "conditions/distress/condition.yaml": b"contexts: [null, [{role: bot}]]\n"}


def _concepts(**changed: bytes) -> dict[str, bytes]:
    out = {}
    for folder in sorted((policies_dir() / "concepts").iterdir()):
        meta = (folder / "concept.yaml").read_bytes()
        out[f"concepts/{folder.name}/concept.yaml"] = changed.get(folder.name, meta)
    return out


CASES: dict[str, Case] = {
    "not-utf8": Case(SHIPPED.encode().replace(b"Customer-support agent", b"Customer\xff agent"),
                     "not UTF-8 text: byte 0xff"),
    "utf16": Case(SHIPPED.encode("utf-16"), "not UTF-8 text"),
    "alias-bomb": _text(_alias_bomb(), "YAML nodes (an alias counts as the nodes it repeats)"),
    "size-bomb": _text(SHIPPED + "#" * (300 * 1024) + "\n", "the file is larger than 262144 bytes",
                       line=False),
    "depth-bomb": _text("".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "x\n",
                        "nested more than 64 levels deep"),
    "flow-depth-bomb": _text("rules: " + "[" * 100_000, "nesting depth"),
    "recursive-alias": _text("name: r\nvectors: &v {a: *v}\n", "refers to a node that contains"),
    "duplicate-priority": _swap("    priority: 100\n", "    priority: 100\n    priority: 1\n",
                                "duplicate key 'priority' (first at line 63)"),
    "nan-strength": _swap("strength: 0.04, max_strength: 0.08, positions",
                          "strength: .nan, max_strength: 0.08, positions",
                          "non-finite number .nan"),
    "inf-scale": _swap("scale: 0.036", "scale: .inf", "non-finite number .inf"),
    "overflowing-float": _swap("max_total_strength: 0.1", "max_total_strength: 1.0e+999",
                               "non-finite number 1.0e+999"),
    "nan-as-text": _swap("strength: 0.02, max_strength: 0.04}",
                         'strength: "nan", max_strength: 0.04}', "Input should be a finite number"),
    "nan-threshold": _swap("threshold: auto}}\n    apply: [refusal]",
                           "threshold: .nan}}\n    apply: [refusal]", "non-finite number"),
    "nan-in-description": _swap("description: Customer-support", "description: .nan\n#",
                                "non-finite number"),
    "unknown-vector": _swap("apply: [refusal]", "apply: [refusl]", "unknown vector 'refusl'"),
    "unknown-condition": _swap("condition: distress,", "condition: distres,",
                               "unknown activation condition 'distres'"),
    "unknown-field": _swap("field: age_band", "field: age_bnd", "unknown profile field 'age_bnd'"),
    "unknown-context-field": _swap("field: channel", "field: chanel",
                                   "unknown context field 'chanel'"),
    "unknown-concept": _swap("concept: formality, layers: 12-16, strength: 0.02",
                             "concept: formalty, layers: 12-16, strength: 0.02",
                             "unknown concept 'formalty'"),
    "concept-with-a-path": _swap("concept: formality, layers: 12-16, strength: 0.02",
                                 "concept: ../formality, layers: 12-16, strength: 0.02",
                                 "is not a plain name"),
    "reversed-span": _swap("layers: 12-16, strength: 0.02", "layers: 16-12, strength: 0.02",
                           "the range is reversed"),
    "negative-layer": _swap("layers: 6-10", "layers: [-1, 6]", "must be within 0..1023"),
    "negative-span": _swap("layers: 6-10", "layers: -3-5",
                           "expected a list of ints or a range 'a-b'"),
    "huge-span": _swap("layers: 6-10", "layers: 0-99999999", "is beyond 1023"),
    "bad-regex": _swap("pattern: '", "pattern: '(unclosed", "invalid regex"),
    "concepts-escape": _swap("concepts: ../concepts", "concepts: ../../../../../..",
                             "concepts folder leads outside the policy folder"),
    "concepts-absolute": _swap("concepts: ../concepts", "concepts: /etc",
                               "concepts folder is an absolute path"),
    "dataset-escape": _swap("dataset: ../conditions/distress", "dataset: ../../../../../../tmp",
                            "condition dataset folder leads outside the policy folder"),
    "dataset-absolute": _swap("dataset: ../conditions/distress", "dataset: /tmp",
                              "condition dataset folder is an absolute path"),
    "broken-dataset": _swap("dataset: ../conditions/distress", "dataset: conditions/distress",
                            "non-finite number NaN", **_broken_dataset()),
    "broken-concept-yaml": _swap(
        "concepts: ../concepts", "concepts: concepts", "non-finite number .nan",
        **_concepts(empathy=b"name: empathy\nrecommended_strength: .nan\ndefault_layers: 23-19\n",
                    caution=b"name: caution\n\xfe\n")),
    "empty": _text("", "the file is empty", line=False),
    "only-a-comment": _text("# nothing here\n", "the file is empty", line=False),
    "not-a-mapping": _text("- a\n- b\n", "a bundle is a mapping"),
    "syntax": _swap("apply: [refusal]", "apply: [refusal", "YAML syntax"),
    "tab-indent": _swap("\n  - id: minor-safety", "\n\t- id: minor-safety", "YAML syntax"),
    "two-documents": _text(SHIPPED + "---\nname: other\n", "a second YAML document"),
    "control-character": _swap("name: support", "name: sup\x07port",
                               "character #x0007 is not allowed"),
    "huge-integer": _swap("priority: 100", "priority: " + "9" * 5000, "cannot read int"),
    "bad-date": _swap('revision: "2026.11.1"', "revision: 2026-13-45", "cannot read timestamp"),
    "python-tag": _swap("name: support", "name: !!python/object/apply:os.system [id]",
                        "could not determine a constructor"),
    "random-bytes": Case(random.Random(15).randbytes(4096), "not UTF-8 text"),
}


def write_corpus(root: Path) -> Path:
    """Every case as `root/<name>/bundle.yaml` (and its files), the shipped concept and
    condition datasets in `root` beside them, as the shipped bundle expects."""
    for name in ("concepts", "conditions"):
        if not (root / name).exists():
            shutil.copytree(policies_dir() / name, root / name)
    for name, case in CASES.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "bundle.yaml").write_bytes(case.bundle)
        for rel, data in case.files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
    return root
