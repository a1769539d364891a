"""A bundle's `concepts:` folder: the concept datasets its vectors come from. Every vector's
concept must have a folder there (with concept.yaml), and a vector without `strength` or
`layers` takes its concept's measured `recommended_strength` / `default_layers` (written by
`steerguard eval`); the values land in the spec, so the bundle's content hash covers them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from steerguard.policy.errors import PolicyIssue
from steerguard.policy.paths import resolve_inside
from steerguard.policy.schema import NAME, Layers
from steerguard.policy.validation import validate
from steerguard.policy.yamlsource import YamlDoc, read_yaml

CONCEPT_FILE = "concept.yaml"
_SOURCES = {"strength": "recommended_strength", "layers": "default_layers"}


class Measured(BaseModel):
    """What the loader reads from a concept.yaml (the rest of it is the vector builder's)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    recommended_strength: float | None = None
    default_layers: Layers | None = None


def concepts_folder(
    data: dict[str, Any], doc: YamlDoc, root: Path, base: Path, out: list[PolicyIssue]
) -> Path | None:
    """The declared concepts folder, when it is a folder inside the policy folder."""
    value = data.get("concepts")
    if not isinstance(value, str):
        return None  # undeclared, or validation reports the type
    folder, problem = resolve_inside(root, base, value)
    if folder is None:
        out.append(doc.issue(("concepts",), f"concepts folder {problem}", value=value,
                             expected=f"a folder inside {root}, relative to {base}"))
    elif not folder.is_dir():
        out.append(doc.issue(("concepts",), "concepts folder not found", value=value,
                             expected=f"a folder of concept datasets, relative to {base}"))
        folder = None
    return folder


def wanting_defaults(data: dict[str, Any]) -> set[str]:
    """Vectors that give no strength or no layers."""
    vectors = data.get("vectors")
    if not isinstance(vectors, dict):
        return set()
    return {name for name, entry in vectors.items()
            if isinstance(entry, dict) and any(k not in entry for k in _SOURCES)}


def fill_from_concepts(
    data: dict[str, Any], doc: YamlDoc, folder: Path, root: Path, out: list[PolicyIssue]
) -> set[str]:
    """Check each vector's concept against `folder`; fill a missing strength or layers from
    its concept.yaml. Returns the vectors left unfilled by a problem already reported."""
    vectors = data.get("vectors")
    unfilled: set[str] = set()
    if not isinstance(vectors, dict):
        return unfilled
    filled_vectors = dict(vectors)
    for name, entry in vectors.items():
        if not isinstance(entry, dict):
            continue
        concept = entry.get("concept") or name
        if not isinstance(concept, str) or not NAME.fullmatch(concept):
            continue  # validation reports a name that is not one
        loc = ("vectors", name, "concept") if "concept" in entry else ("vectors", name)
        meta_path, problem = resolve_inside(root, folder, f"{concept}/{CONCEPT_FILE}")
        if meta_path is None or not meta_path.is_file():
            out.append(doc.issue(
                loc, f"unknown concept {concept!r}" + (f": its folder {problem}" if problem
                                                       else f" in {folder}"),
                expected="a concept folder with concept.yaml, one of: "
                + ", ".join(known_concepts(folder))))
            unfilled.add(name)
            continue
        missing = [k for k in _SOURCES if k not in entry]
        if not missing:
            continue
        meta_doc = read_yaml(meta_path)
        out.extend(meta_doc.issues)
        measured = None
        if not meta_doc.issues:
            measured = validate(Measured, meta_doc.data or {}, meta_doc, (), out)
        if measured is None:
            unfilled.add(name)
            continue
        filled = dict(entry)
        for key in missing:
            value = getattr(measured, _SOURCES[key])
            if value is None:
                out.append(doc.issue(
                    ("vectors", name),
                    f"no {key} given and {meta_path} has no {_SOURCES[key]} (`steerguard eval` "
                    "records it when an effect passes its rule)",
                    expected=f"{key}: ...",
                ))
                unfilled.add(name)
            else:
                filled[key] = value
        filled_vectors[name] = filled
    data["vectors"] = filled_vectors
    return unfilled


def follows_from_unfilled(issue: PolicyIssue, unfilled: set[str]) -> bool:
    """A missing strength or layers that a concept problem, reported already, explains."""
    return (issue.field is not None and issue.field.removeprefix("vectors.") in unfilled
            and issue.message in ("missing required field 'strength'",
                                  "missing required field 'layers'"))


def known_concepts(folder: Path) -> list[str]:
    return sorted(p.parent.name for p in folder.glob(f"*/{CONCEPT_FILE}"))

