"""Load a bundle: parse with positions, validate, check, compile; all errors or nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from steerguard.policy.bundle import Bundle, compile_bundle
from steerguard.policy.catalog import VectorCatalog
from steerguard.policy.checks import check_header, check_rule
from steerguard.policy.errors import PolicyError, PolicyIssue
from steerguard.policy.schema import BundleSpec, RuleSpec
from steerguard.policy.yamlsource import Loc, YamlDoc, parse_yaml

BUNDLE_FILE = "bundle.yaml"


def bundle_file(path: str | Path) -> Path:
    """The YAML file of a bundle given as a folder (its bundle.yaml) or as the file itself."""
    p = Path(path)
    return p / BUNDLE_FILE if p.is_dir() else p


def load_bundle(path: str | Path, catalog: VectorCatalog | None = None) -> Bundle:
    """Load and compile a bundle, or raise PolicyError listing every mistake found.

    `catalog`, when given, checks each pinned vector hash against the vector library.
    """
    file = bundle_file(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(
            [
                PolicyIssue(
                    message=f"cannot read bundle: {e.strerror or e}",
                    file=str(file),
                    expected=f"a YAML file or a folder with {BUNDLE_FILE}",
                )
            ]
        ) from None
    return load_bundle_text(text, str(file), catalog)


def load_bundle_text(
    text: str, file: str = "<string>", catalog: VectorCatalog | None = None
) -> Bundle:
    doc = parse_yaml(text, file)
    issues = list(doc.issues)
    if doc.root is None or issues:
        raise PolicyError(
            issues
            or [PolicyIssue(message="the file is empty", file=file, expected="a bundle mapping")]
        )
    if not isinstance(doc.data, dict):
        raise PolicyError(
            [doc.issue((), "a bundle is a mapping", expected="name, revision, vectors, rules, ...")]
        )

    raw_rules = doc.data.get("rules", [])
    header_data = {k: v for k, v in doc.data.items() if k != "rules"}
    _defaults_from_concepts(header_data, doc, Path(file).parent, issues)
    header = _validate(BundleSpec, header_data, doc, (), issues)
    rules: list[tuple[int, RuleSpec]] = []
    if not isinstance(raw_rules, list):
        issues.append(doc.issue(("rules",), "rules must be a list", expected="a list of rules"))
    else:
        # Each rule on its own, so one bad rule does not hide the others' mistakes.
        for i, raw in enumerate(raw_rules):
            rule = _validate(RuleSpec, raw, doc, ("rules", i), issues)
            if rule is not None:
                rules.append((i, rule))

    if header is not None:
        base = Path(file).parent
        issues.extend(check_header(header, doc, base, catalog))
        first_line: dict[str, int] = {}
        for i, rule in rules:
            issues.extend(check_rule(rule, i, header, doc, first_line))
    if issues:
        raise PolicyError(sorted(issues, key=lambda i: (i.line or 0, i.column or 0)))
    assert header is not None
    spec = header.model_copy(update={"rules": [r for _, r in rules]})
    return compile_bundle(spec, Path(file))


def _defaults_from_concepts(
    data: dict[str, Any], doc: YamlDoc, base: Path, out: list[PolicyIssue]
) -> None:
    """With `concepts:` declared, a vector without `strength` or `layers` takes its concept's
    measured `recommended_strength` / `default_layers` (concept.yaml, written by `steerguard
    eval`). The values land in the spec, so the bundle's content hash covers them."""
    folder, vectors = data.get("concepts"), data.get("vectors")
    if not isinstance(folder, str) or not isinstance(vectors, dict):
        return  # without a folder, validation reports any missing field
    filled_vectors = dict(vectors)
    for name, entry in vectors.items():
        if not isinstance(entry, dict):
            continue
        missing = [k for k in ("strength", "layers") if k not in entry]
        if not missing:
            continue
        concept = entry.get("concept") or name
        path = base / folder / str(concept) / "concept.yaml"
        try:
            meta = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            out.append(doc.issue(("vectors", name), f"cannot read {path}: {exc}",
                                 expected="strength and layers, or a readable concept.yaml"))
            continue
        sources = {"strength": "recommended_strength", "layers": "default_layers"}
        filled = dict(entry)
        for key in missing:
            value = meta.get(sources[key]) if isinstance(meta, dict) else None
            if value is None:
                out.append(doc.issue(
                    ("vectors", name),
                    f"no {key} given and {path} has no {sources[key]} (`steerguard eval` "
                    "records it when an effect passes its rule)",
                    expected=f"{key}: ...",
                ))
            else:
                filled[key] = value
        filled_vectors[name] = filled
    data["vectors"] = filled_vectors


def _validate(
    model: type[BaseModel], data: Any, doc: YamlDoc, prefix: Loc, out: list[PolicyIssue]
) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        rule = _rule_id(data) if prefix[:1] == ("rules",) else None
        merged: dict[tuple[object, ...], PolicyIssue] = {}
        for err in e.errors():
            issue = doc.issue((*prefix, *err["loc"]), _describe(err), rule=rule)
            key = (
                issue.line,
                issue.column,
                issue.field,
                err["type"] in ("missing", "extra_forbidden") and issue.message,
            )
            if key in merged:
                # An untagged union reports one error per member for one wrong value.
                first = merged[key]
                merged[key] = PolicyIssue(
                    **{**first.__dict__, "message": f"{first.message}, or {issue.message.lower()}"}
                )
            else:
                merged[key] = issue
        out.extend(merged.values())
        return None


def _rule_id(data: Any) -> str | None:
    value = data.get("id") if isinstance(data, dict) else None
    return str(value) if value is not None else None


def _describe(err: Any) -> str:
    """A message for one pydantic error, naming the offending value."""
    kind, loc, value = err["type"], err["loc"], err.get("input")
    last = next((x for x in reversed(loc) if isinstance(x, str)), "")
    if kind == "extra_forbidden":
        return f"unknown field {last!r}"
    if kind == "missing":
        return f"missing required field {last!r}"
    msg = err["msg"].removeprefix("Value error, ")
    shown = value if isinstance(value, str | int | float | bool) else None
    suffix = f" (got {shown!r})" if shown is not None else ""
    return msg + suffix
