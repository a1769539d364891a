"""Load a bundle: parse with positions, validate, check, compile; all errors or nothing."""

from __future__ import annotations

from pathlib import Path

from steerguard.policy.bundle import Bundle, compile_bundle
from steerguard.policy.catalog import VectorCatalog
from steerguard.policy.checks import Target, check_header, check_rule
from steerguard.policy.concepts import (
    concepts_folder,
    fill_from_concepts,
    follows_from_unfilled,
    wanting_defaults,
)
from steerguard.policy.errors import PolicyError, PolicyIssue
from steerguard.policy.paths import BUNDLE_FILE, bundle_file, policy_root
from steerguard.policy.schema import BundleSpec, RuleSpec
from steerguard.policy.validation import validate
from steerguard.policy.yamlsource import YamlDoc, parse_yaml, read_yaml

__all__ = ["BUNDLE_FILE", "bundle_file", "load_bundle", "load_bundle_text"]


def load_bundle(
    path: str | Path, catalog: VectorCatalog | None = None, num_layers: int | None = None
) -> Bundle:
    """Load and compile a bundle, or raise PolicyError listing every mistake found.

    `catalog`, when given, checks each pinned vector hash against the vector library;
    `num_layers`, the decoder layer count of the model the bundle will steer, checks that
    every layer it names exists.
    """
    file = bundle_file(path)
    if not file.is_file():
        raise PolicyError([
            PolicyIssue(
                message="cannot read bundle: no such file",
                file=str(file),
                expected=f"a YAML file or a folder with {BUNDLE_FILE}",
            )
        ])
    return _load(read_yaml(file), catalog, num_layers)


def load_bundle_text(
    text: str,
    file: str = "<string>",
    catalog: VectorCatalog | None = None,
    num_layers: int | None = None,
) -> Bundle:
    """A bundle from YAML text; `file` names it in errors and places its relative paths."""
    return _load(parse_yaml(text, file), catalog, num_layers)


def _load(doc: YamlDoc, catalog: VectorCatalog | None, num_layers: int | None) -> Bundle:
    file = doc.file
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

    base, root = Path(file).parent, policy_root(Path(file))
    raw_rules = doc.data.get("rules", [])
    header_data = {k: v for k, v in doc.data.items() if k != "rules"}
    folder = concepts_folder(header_data, doc, root, base, issues)
    if folder is not None:
        unfilled = fill_from_concepts(header_data, doc, folder, root, issues)
    else:  # declared and unusable: reported, and its defaults are not to be had
        unfilled = wanting_defaults(header_data) if "concepts" in header_data else set()
    header = validate(BundleSpec, header_data, doc, (), issues)
    issues = [i for i in issues if not follows_from_unfilled(i, unfilled)]
    rules: list[tuple[int, RuleSpec]] = []
    if not isinstance(raw_rules, list):
        issues.append(doc.issue(("rules",), "rules must be a list", expected="a list of rules"))
    else:
        # Each rule on its own, so one bad rule does not hide the others' mistakes.
        for i, raw in enumerate(raw_rules):
            rule = validate(RuleSpec, raw, doc, ("rules", i), issues, rule=_rule_id(raw))
            if rule is not None:
                rules.append((i, rule))

    if header is not None:
        target = Target(catalog, num_layers)
        issues.extend(check_header(header, doc, root, base, target))
        first_line: dict[str, int] = {}
        for i, rule in rules:
            issues.extend(check_rule(rule, i, header, doc, first_line, target))
    if issues:
        # the bundle's own mistakes first, then those of files it names, each by position
        raise PolicyError(
            sorted(issues, key=lambda i: (i.file != file, i.file or "", i.line or 0,
                                          i.column or 0))
        )
    assert header is not None
    spec = header.model_copy(update={"rules": [r for _, r in rules]})
    return compile_bundle(spec, Path(file))


def _rule_id(data: object) -> str | None:
    value = data.get("id") if isinstance(data, dict) else None
    return str(value)[:80] if value is not None else None
