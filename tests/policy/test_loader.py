"""Loading: every mistake is reported with file, line, column, rule and field; nothing loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerguard.policy.catalog import MappingCatalog
from steerguard.policy.errors import PolicyError
from steerguard.policy.loader import load_bundle, load_bundle_text

from .helpers import bundle_yaml, load_errors

GOOD_RULE = """
- id: a
  when: {keywords: {words: [sad]}}
  apply: [empathy]
"""


def test_valid_bundle_loads_and_orders_rules() -> None:
    text = bundle_yaml(
        """
        - id: low
          priority: 1
          when: {all: []}
        - id: b-high
          priority: 5
          when: {all: []}
        - id: a-high
          priority: 5
          when: {all: []}
        """
    )
    bundle = load_bundle_text(text, "t.yaml")
    assert [r.spec.id for r in bundle.rules] == ["a-high", "b-high", "low"]
    assert bundle.ref.name == "t" and bundle.ref.revision == "1"
    assert len(bundle.content_hash) == 64


def test_content_hash_ignores_comments_and_key_order() -> None:
    a = load_bundle_text(bundle_yaml(GOOD_RULE), "a.yaml")
    b = load_bundle_text("# a comment\n" + bundle_yaml(GOOD_RULE), "b.yaml")
    c = load_bundle_text(bundle_yaml(GOOD_RULE.replace("sad", "glum")), "c.yaml")
    assert a.content_hash == b.content_hash != c.content_hash


def test_unknown_vector_names_line_column_rule_field() -> None:
    text = bundle_yaml(
        """
        - id: r1
          when: {keywords: {words: [sad]}}
          apply: [{vector: empathi}]
        """
    )
    err = load_errors(text)
    (issue,) = err.issues
    lines = text.splitlines()
    assert issue.file == "t.yaml"
    assert lines[issue.line - 1][issue.column - 1 :].startswith("empathi")
    assert issue.rule == "r1"
    assert issue.field == "rules[0].apply[0].vector"
    assert "unknown vector 'empathi'" in issue.message
    assert "empathy" in (issue.expected or "")
    assert "t.yaml:" in str(err)


def test_all_errors_are_reported_across_rules() -> None:
    text = bundle_yaml(
        """
        - id: dup
          when: {profile: {field: age, equals: minor}}
          apply: [{vector: empathy, strength: 3}]
        - id: dup
          when: {regex: {pattern: "(unclosed"}}
          deny: [nope]
        - id: typed
          when: {keywords: {words: [x]}}
          apply: [{vector: empathy, strength: high}]
        - id: cond
          when: {keyword: {words: [x]}}
        - id: act
          when: {activation: {condition: harmfull}}
        - id: lit
          when: {profile: {field: age_band, equals: kid}}
        """
    )
    issues = load_errors(text).issues
    by_rule = {(i.rule, i.field): i for i in issues}
    assert "unknown profile field 'age'" in by_rule[("dup", "rules[0].when.profile.field")].message
    assert "strength out of bounds" in by_rule[("dup", "rules[0].apply[0].strength")].message
    assert "duplicate rule id" in by_rule[("dup", "rules[1].id")].message
    assert "invalid regex" in by_rule[("dup", "rules[1].when.regex.pattern")].message
    assert "unknown vector 'nope'" in by_rule[("dup", "rules[1].deny[0]")].message
    assert "valid number" in by_rule[("typed", "rules[2].apply[0].strength")].message
    assert "exactly one key" in by_rule[("cond", "rules[3].when")].message
    assert (
        "unknown activation condition"
        in by_rule[("act", "rules[4].when.activation.condition")].message
    )
    assert "never match" in by_rule[("lit", "rules[5].when.profile.equals")].message
    assert len(issues) == 9
    assert all(i.line and i.column for i in issues)
    assert [i.line for i in issues] == sorted(i.line for i in issues)  # type: ignore[type-var]


def test_strength_from_profile_field_checks() -> None:
    text = bundle_yaml(
        """
        - id: f
          when: {all: []}
          apply:
            - {vector: formal, strength: {from: age_band, min: 0, max: 0.5}}
            - {vector: formal, strength: {from: nothing, min: 0, max: 0.5}}
            - {vector: formal, strength: {from: formality_preference, min: 0, max: 4}}
        """
    )
    msgs = [i.message for i in load_errors(text).issues]
    assert any("'age_band' is enum" in m for m in msgs)
    assert any("unknown profile field 'nothing'" in m for m in msgs)
    assert any("strength bound out of bounds" in m for m in msgs)


def test_duplicate_yaml_key_and_syntax_error() -> None:
    dup = load_errors(bundle_yaml("- id: a\n  id: b\n  when: {all: []}\n"))
    assert any("duplicate key 'id'" in i.message for i in dup.issues)
    syntax = load_errors("name: [unclosed\n")
    assert syntax.issues[0].line is not None and "YAML syntax" in syntax.issues[0].message


def test_unknown_top_level_field_and_missing_field() -> None:
    err = load_errors("name: t\nrevision: '1'\nvectrs: {}\n")
    msgs = {i.message for i in err.issues}
    assert "unknown field 'vectrs'" in msgs
    assert "missing required field 'vectors'" in msgs


def test_pinned_hash_checked_against_catalog() -> None:
    text = bundle_yaml(GOOD_RULE).replace(
        "empathy: {layers: [8, 9], strength: 0.3}",
        "empathy: {layers: [8, 9], strength: 0.3, hash: 'sha256:abc'}",
    )
    load_bundle_text(text, "t.yaml")  # no catalog: the pin cannot be checked yet
    load_bundle_text(text, "t.yaml", MappingCatalog({"empathy": "abc"}))
    with pytest.raises(PolicyError) as e:
        load_bundle_text(text, "t.yaml", MappingCatalog({"empathy": "def"}))
    (issue,) = e.value.issues
    assert issue.field == "vectors.empathy.hash" and issue.expected == "def"
    with pytest.raises(PolicyError, match="not in the vector library"):
        load_bundle_text(text, "t.yaml", MappingCatalog({}))


def test_a_prefixed_pin_reaches_the_plan_as_the_bare_hash_the_runtime_compares() -> None:
    from steerguard.policy.engine import PolicyEngine
    from steerguard.policy.inputs import ChatMessage

    text = bundle_yaml(GOOD_RULE).replace(
        "empathy: {layers: [8, 9], strength: 0.3}",
        "empathy: {layers: [8, 9], strength: 0.3, hash: 'sha256:ABC123'}",
    )
    engine = PolicyEngine(load_bundle_text(text, "t.yaml", MappingCatalog({"empathy": "abc123"})))
    decision = engine.decide([ChatMessage(role="user", content="I am sad")])
    assert [iv.vector_hash for iv in decision.plan.interventions] == ["abc123"]


def test_declared_field_rules() -> None:
    text = bundle_yaml(GOOD_RULE).replace(
        "  consent.personalization: {type: boolean}",
        "  consent.personalization: {type: string}\n  roles2.x: {type: string}",
    )
    msgs = [i.message for i in load_errors(text).issues]
    assert any("consent.* fields must be declared as boolean" in m for m in msgs)
    assert any("dotted names" in m for m in msgs)


def test_missing_dataset_folder(tmp_path: Path) -> None:
    text = bundle_yaml(GOOD_RULE).replace(
        "harmful: {layer: 4}", "harmful: {layer: 4, dataset: nowhere}"
    )
    (tmp_path / "bundle.yaml").write_text(text)
    with pytest.raises(PolicyError, match="dataset folder not found"):
        load_bundle(tmp_path)


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read bundle"):
        load_bundle(tmp_path)


def test_vectors_default_to_the_concepts_measured_strength_and_layers(tmp_path: Path) -> None:
    for name in ("caution", "formality", "concision"):  # the other vectors' concepts
        (tmp_path / "concepts" / name).mkdir(parents=True)
        (tmp_path / "concepts" / name / "concept.yaml").write_text(f"name: {name}\n")
    concept = tmp_path / "concepts" / "empathy"
    concept.mkdir(parents=True)
    (concept / "concept.yaml").write_text(
        "name: empathy\nrecommended_strength: 0.04\ndefault_layers: [19, 20, 21]\n"
    )
    text = "concepts: concepts\n" + bundle_yaml(GOOD_RULE).replace(
        "empathy: {layers: [8, 9], strength: 0.3}", "empathy: {max_strength: 0.08}"
    )
    bundle_file = tmp_path / "bundle.yaml"
    bundle_file.write_text(text)
    empathy = load_bundle(bundle_file).spec.vectors["empathy"]
    assert (empathy.strength, tuple(empathy.layers)) == (0.04, (19, 20, 21))
    (concept / "concept.yaml").write_text("name: empathy\ndefault_layers: [19]\n")
    with pytest.raises(PolicyError, match="has no recommended_strength") as e:
        load_bundle(bundle_file)
    assert e.value.issues[0].field == "vectors.empathy"
    with pytest.raises(PolicyError, match="strength"):  # without `concepts:` it is required
        load_bundle_text(text.replace("concepts: concepts\n", ""), str(bundle_file))
