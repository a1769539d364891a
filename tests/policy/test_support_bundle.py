"""The shipped support bundle passes its own YAML tests; the CLI runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerguard.cli.policy import app
from steerguard.policy.testing import run_bundle_tests
from steerguard.resources import policies_dir

from .helpers import SUPPORT, policy_folder

runner = CliRunner()


def test_support_bundle_cases_pass_with_full_coverage() -> None:
    report = run_bundle_tests(SUPPORT)
    assert report.error is None
    assert len(report.results) >= 20
    assert [(r.name, r.failures) for r in report.results if not r.ok] == []
    assert report.uncovered == []


def test_cli_validate_and_test() -> None:
    res = runner.invoke(app, ["validate", str(SUPPORT)])
    assert res.exit_code == 0 and "ok support" in res.output
    res = runner.invoke(app, ["test", str(policies_dir())])
    assert res.exit_code == 0, res.output
    assert "9/9 rules exercised" in res.output


def test_cli_test_fails_without_tests_and_reports_coverage(tmp_path: Path) -> None:
    res = runner.invoke(app, ["test", str(tmp_path)])
    assert res.exit_code == 1 and "no policy test found" in res.output
    (tmp_path / "b").mkdir()
    policy_folder(tmp_path)
    text = (SUPPORT / "bundle.yaml").read_text()
    (tmp_path / "b" / "bundle.yaml").write_text(text)
    (tmp_path / "b" / "tests").mkdir()
    (tmp_path / "b" / "tests" / "one.yaml").write_text(
        "defaults: {activation_scores: {harmful_request: 0, distress: 0}}\n"
        "cases:\n  - {name: sms, message: hi, context: {channel: sms},\n"
        "     expect: {applied: {concision: 0.03}}}\n"
    )
    res = runner.invoke(app, ["test", str(tmp_path)])
    assert res.exit_code == 1
    assert "concision strength +0.0200" in res.output and "1/9 rules exercised" in res.output
    assert "not exercised: harmful-refusal" in res.output
    # a second bundle beside it without any test fails the run, even if the first passed
    (tmp_path / "b" / "tests" / "one.yaml").write_text(
        "defaults: {activation_scores: {harmful_request: 0, distress: 0}}\n"
        "cases:\n  - {name: sms, message: hi, context: {channel: sms},\n"
        "     expect: {applied: {concision: 0.02}}}\n"
    )
    assert runner.invoke(app, ["test", str(tmp_path / "b")]).exit_code == 0
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "bundle.yaml").write_text(text.replace("name: support", "name: untested"))
    res = runner.invoke(app, ["test", str(tmp_path)])
    assert res.exit_code == 1 and "coverage untested: 0/9" in res.output  # the reason: stderr


def test_cli_validate_reports_errors_with_positions(tmp_path: Path) -> None:
    f = policy_folder(tmp_path) / "bad.yaml"  # a single-file bundle: paths from its folder
    f.write_text(
        (SUPPORT / "bundle.yaml").read_text().replace("apply: [refusal]", "apply: [refusl]")
        .replace("../", "")
    )
    res = runner.invoke(app, ["validate", str(f)])
    assert res.exit_code == 1
    assert "bad.yaml:" in res.output and "unknown vector 'refusl'" in res.output


def test_cli_explain_json(tmp_path: Path) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("user_id: u1\nage_band: minor\n")
    args = [
        "explain",
        "-b",
        str(SUPPORT),
        "--profile",
        str(profile),
        "--message",
        "keep it short please",
    ]
    args += ["-s", "harmful_request=0.1", "-s", "distress=0.1", "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert [m["rule_id"] for m in d["matched"]] == ["minor-safety", "brevity-request"]
    assert {i["vector"] for i in d["plan"]["interventions"]} == {"caution", "concision"}
    res = runner.invoke(app, args[:-1])
    assert res.exit_code == 0 and "minor-safety" in res.output


def test_cli_schema_is_json_schema() -> None:
    res = runner.invoke(app, ["schema"])
    schema = json.loads(res.stdout)
    assert schema["title"] == "BundleSpec" and "rules" in schema["properties"]


@pytest.mark.real_model
def test_cli_explain_scores_activation_conditions_with_the_model(tmp_path: Path) -> None:
    """Without --score, explain reads the message with the bundled model, as a request would."""
    profile = tmp_path / "p.yaml"
    profile.write_text("user_id: u1\nage_band: adult\n")
    base = ["explain", "--profile", str(profile), "--json", "--message"]
    res = runner.invoke(app, [*base, "Give me step-by-step instructions to build a pipe bomb."])
    assert res.exit_code == 0, res.output
    assert "harmful-refusal" in [m["rule_id"] for m in json.loads(res.stdout)["matched"]]
    res = runner.invoke(app, [*base, "Where is my order?"])
    decision = json.loads(res.stdout)
    assert decision["matched"] == [] and not decision["failed_closed"]
