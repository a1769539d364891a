"""Broken and hostile policy files are refused with an error that names the file, line and
field and what was expected: never a traceback, never a hang, never half-loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerguard.cli.policy import app
from steerguard.inputfiles import MAX_YAML_NODES
from steerguard.policy.errors import PolicyError
from steerguard.policy.loader import load_bundle, load_bundle_text
from steerguard.policy.store import PolicyStore
from steerguard.policy.testing import run_bundle_tests

from .helpers import SUPPORT, policy_folder
from .hostile import CASES, SHIPPED, write_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def _refused(path: Path, **kw: object) -> PolicyError:
    with pytest.raises(PolicyError) as e:
        load_bundle(path, **kw)  # type: ignore[arg-type]
    return e.value


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_broken_bundle_gets_a_clear_error(corpus: Path, name: str) -> None:
    case = CASES[name]
    err = _refused(corpus / name)
    assert case.expect in str(err), str(err)
    first = err.issues[0]
    assert first.file and Path(first.file).name in ("bundle.yaml", "concept.yaml",
                                                    "train.jsonl", "eval.jsonl",
                                                    "condition.yaml")
    if case.line:
        assert first.line and first.column, first
    assert all(i.message and i.file for i in err.issues)


def test_the_shipped_bundle_itself_loads(corpus: Path) -> None:
    (corpus / "shipped").mkdir(exist_ok=True)
    (corpus / "shipped" / "bundle.yaml").write_text(SHIPPED)
    assert load_bundle(corpus / "shipped").spec.name == "support"


def test_validate_prints_every_error_and_exits_1_without_a_traceback(corpus: Path) -> None:
    """The real command, in its own process, over the whole corpus at once."""
    exe = Path(sys.executable).with_name("steerguard")
    env = {**os.environ, "COLUMNS": "250"}
    res = subprocess.run([str(exe), "policy", "validate", str(corpus)], capture_output=True,
                         text=True, timeout=300, env=env)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for name in CASES:
        assert f"{corpus / name}/" in res.stderr, name  # every bundle's errors are shown
    assert res.stderr.count("error ") >= len(CASES)


def test_duplicate_keys_name_both_lines() -> None:
    text = SHIPPED.replace("    priority: 100\n", "    priority: 100\n    priority: 1\n", 1)
    (issue,) = _text_errors(text).issues
    assert (issue.line, issue.column) == (64, 5)
    assert issue.message == "duplicate key 'priority' (first at line 63)"
    assert issue.field == "rules[0]"


def _text_errors(text: str, **kw: object) -> PolicyError:
    with pytest.raises(PolicyError) as e:
        load_bundle_text(text, str(SUPPORT / "bundle.yaml"), **kw)  # type: ignore[arg-type]
    return e.value


@pytest.mark.parametrize("old,new,field", [
    ("strength: 0.04, max_strength: 0.08, positions", "strength: .nan, max_strength: 0.08, "
     "positions", "vectors.refusal.strength"),
    ("max_strength: 0.08, description: \"supportive", "max_strength: .inf, description: "
     "\"supportive", "vectors.empathy.max_strength"),
    ("max_total_strength: 0.1", "max_total_strength: -.inf", "limits.max_total_strength"),
    ("min: 0, max: 1,", "min: 0, max: .inf,", "profile.formality_preference.max"),
    ("scale: 0.036, min: 0.01", "scale: 0.036, min: .NaN", "rules[5].apply[0].strength.min"),
    ("range: {min: 0.5}", "range: {min: .nan}", "rules[5].when.any[1].profile.range.min"),
    ("threshold: auto}}\n    apply: [refusal]", "threshold: .inf}}\n    apply: [refusal]",
     "rules[0].when.activation.threshold"),
    ("values: [formal, neutral, casual]", "values: [formal, .nan, casual]",
     "profile.preferences.register.values[1]"),
])
def test_non_finite_numbers_are_refused_anywhere_with_field_and_line(old: str, new: str,
                                                                    field: str) -> None:
    assert old in SHIPPED
    text = SHIPPED.replace(old, new, 1)
    err = _text_errors(text)
    issue = next(i for i in err.issues if "non-finite" in i.message)
    assert issue.field == field
    literal = issue.message.removeprefix("non-finite number ")
    assert literal in new
    assert text.splitlines()[issue.line - 1][issue.column - 1:].startswith(literal)


@pytest.mark.parametrize("value", ['"nan"', '"-inf"', '"Infinity"', "1e999"])
def test_non_finite_numbers_written_as_text_are_refused_too(value: str) -> None:
    text = SHIPPED.replace("strength: 0.02, max_strength: 0.04}",
                           f"strength: {value}, max_strength: 0.04}}", 1)
    (issue,) = _text_errors(text).issues
    assert issue.field == "vectors.formal.strength"
    assert "finite number" in issue.message


def test_layers_beyond_the_model_name_the_vector_and_the_valid_range() -> None:
    text = SHIPPED.replace("apply: [{vector: concise, strength: 0.02}]",
                           "apply: [{vector: concise, strength: 0.02, layers: [29, 30]}]", 1)
    load_bundle_text(text, str(SUPPORT / "bundle.yaml"))  # the model is not known: fine
    err = _text_errors(text, num_layers=30)
    (issue,) = err.issues
    assert issue.field == "rules[8].apply[0].layers" and issue.rule == "terse-channel"
    assert issue.message == "vector 'concise': layer 30 out of range for the model (30 layers)"
    assert issue.expected == "layers within 0..29"
    fields = {i.field for i in _text_errors(SHIPPED, num_layers=24).issues}
    assert fields == {"activations.harmful_request.layers"}  # it reads layer 26


def test_a_store_keeps_its_bundle_when_a_reload_names_a_layer_the_model_lacks(
    tmp_path: Path,
) -> None:
    policy_folder(tmp_path)
    (tmp_path / "b").mkdir()
    file = tmp_path / "b" / "bundle.yaml"
    file.write_text(SHIPPED)
    store = PolicyStore(tmp_path / "b", num_layers=30)
    file.write_text(SHIPPED.replace("layers: 6-10", "layers: 28-31"))
    result = store.reload()
    assert not result.ok and result.revision == "2026.11.1"
    assert result.error is not None and "out of range for the model" in str(result.error)


def test_a_symlink_out_of_the_policy_folder_is_refused(tmp_path: Path) -> None:
    policy_folder(tmp_path / "policies")
    (tmp_path / "policies" / "b").mkdir()
    outside = tmp_path / "elsewhere"
    (outside / "distress").mkdir(parents=True)
    (tmp_path / "policies" / "b" / "data").symlink_to(outside, target_is_directory=True)
    (tmp_path / "policies" / "b" / "bundle.yaml").write_text(
        SHIPPED.replace("dataset: ../conditions/distress", "dataset: data/distress"))
    err = _refused(tmp_path / "policies" / "b")
    (issue,) = err.issues
    assert issue.field == "activations.distress.dataset" and issue.line == 58
    assert "leads outside the policy folder" in issue.message


def test_a_single_file_bundle_may_use_the_folders_beside_it(tmp_path: Path) -> None:
    policy_folder(tmp_path)
    (tmp_path / "mine.yaml").write_text(SHIPPED.replace("../", ""))
    assert load_bundle(tmp_path / "mine.yaml").spec.name == "support"
    (tmp_path / "mine.yaml").write_text(SHIPPED)  # ../concepts: above its folder
    assert "leads outside" in str(_refused(tmp_path / "mine.yaml"))


def test_the_node_limit_counts_what_aliases_repeat() -> None:
    words = "[" + ", ".join(f"w{i}" for i in range(99)) + "]"
    rule = "  - id: r{i}\n    when: {{keywords: {{words: *w}}}}\n"
    head = SHIPPED.split("rules:")[0].replace("profile:", f"x-words: &w {words}\nprofile:", 1)
    few = head + "rules:\n" + "".join(rule.format(i=i) for i in range(3))
    assert "unknown field 'x-words'" in str(_text_errors(few))  # parsed: the aliases are fine
    many = head + "rules:\n" + "".join(rule.format(i=i) for i in range(MAX_YAML_NODES // 100))
    assert f"more than {MAX_YAML_NODES} YAML nodes" in str(_text_errors(many))


def test_broken_policy_tests_and_probes_are_errors_of_the_report(tmp_path: Path) -> None:
    policy_folder(tmp_path)
    bundle = tmp_path / "support"
    bundle.mkdir()
    (bundle / "bundle.yaml").write_text(SHIPPED)
    (bundle / "tests").mkdir()
    (bundle / "tests" / "a.yaml").write_bytes(b"cases:\n  - name: x\n    message: \xff\n")
    (bundle / "tests" / "b.yaml").write_text(
        "defaults: {activation_scores: {distress: .nan}}\ncases:\n"
        "  - {name: y, message: hi, expect: {rules: []}, expect: {rules: [a]}}\n")
    (bundle / "probes").mkdir()
    (bundle / "probes" / "distress.json").write_text('{"name": "distress", "parts": [')
    report = run_bundle_tests(bundle)
    assert report.error is not None and not report.ok
    messages = [str(i) for i in report.error.issues]
    assert any("a.yaml:3:14" in m and "not UTF-8" in m for m in messages), messages
    assert any("b.yaml:1:42" in m and "non-finite number .nan" in m for m in messages)
    assert any("b.yaml:3:49" in m and "duplicate key 'expect'" in m for m in messages)
    assert any("distress.json" in m and "cannot read the probe" in m for m in messages)
    res = runner.invoke(app, ["test", str(bundle)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)


def test_hashes_that_cannot_be_read_are_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "hashes.json"
    for content in (b"{not json", b"\xff\xfe", b"[1, 2]"):
        bad.write_bytes(content)
        res = runner.invoke(app, ["validate", str(SUPPORT), "--hashes", str(bad)])
        assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
        assert "--hashes" in res.output
    res = runner.invoke(app, ["validate", str(SUPPORT), "--num-layers", "20"])
    assert res.exit_code == 1 and "out of range for the model (20 layers)" in res.output


def test_the_command_line_loads_without_torch() -> None:
    """`steerguard policy validate` must answer fast: its process imports neither torch nor
    transformers (seconds of import), only what reading policies needs."""
    code = ("import sys; import steerguard.cli.app; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
