"""Property tests: mutated versions of the shipped bundle, its policy tests and its datasets,
and random bytes, given to the readers. Each returns its result or raises its own error type
(PolicyError, VectorError): nothing else, and never a hang (a generous deadline per example
catches one; speed is measured in benchmarks/bench_policy_load.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steerguard.errors import VectorError
from steerguard.policy.bundle import Bundle
from steerguard.policy.datasets import ConditionData, load_condition_data
from steerguard.policy.errors import PolicyError
from steerguard.policy.loader import load_bundle, load_bundle_text
from steerguard.policy.testing import run_bundle_tests
from steerguard.resources import policies_dir
from steerguard.vectors.datasets import Concept, load_concept

from .helpers import SUPPORT, policy_folder

FUZZ = settings(max_examples=60, deadline=timedelta(seconds=10),
                suppress_health_check=[HealthCheck.too_slow], derandomize=True)

# Values a policy author (or an attacker) might put where another one was.
TOKENS = [".nan", ".inf", "-.inf", "1e999", "1.0e+999", "~", "[]", "{}", "''", "-1", "0",
          "99999999", "true", "*a", "&a x", "!!binary eA==", "!!python/none ''", "2026-13-45",
          "'../../etc'", "/etc/passwd", "'23-19'", "'0-99999999'", "[1, 1]", "'('",
          "'(a+)+$'", "\x00", "\ufeff", "'\\u0000'", "|\n  block", "{a: *b}", "<<: {}"]


def _lines(text: str) -> st.SearchStrategy[str]:
    """`text` with a few of its lines deleted, duplicated, swapped, given another value or
    type, or with random characters inserted."""
    lines = text.splitlines(keepends=True)

    @st.composite
    def mutated(draw: st.DrawFn) -> str:
        out = list(lines)
        for _ in range(draw(st.integers(1, 4), label="edits")):
            i = draw(st.integers(0, len(out) - 1), label="line")
            op = draw(st.sampled_from(["delete", "duplicate", "swap", "value", "type",
                                       "insert", "indent"]), label="op")
            line = out[i]
            if op == "delete":
                del out[i]
            elif op == "duplicate":
                out.insert(i, line)
            elif op == "swap":
                j = draw(st.integers(0, len(out) - 1), label="with")
                out[i], out[j] = out[j], out[i]
            elif op == "value" and ":" in line:
                value = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=12)),
                             label="value")
                out[i] = line[: line.index(":") + 1] + " " + value + "\n"
            elif op == "type":
                out[i] = (line.replace("[", "{", 1) if "[" in line
                          else line.replace(": ", ": [", 1).rstrip("\n") + "]\n")
            elif op == "insert":
                at = draw(st.integers(0, len(line)), label="at")
                out[i] = line[:at] + draw(st.text(min_size=1, max_size=4), label="text") + line[at:]
            else:
                out[i] = draw(st.sampled_from(["", " ", "\t", "    "]), label="indent") + line
            if not out:
                break
        return "".join(out)

    return mutated()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A policy folder with a copy of the shipped bundle (its datasets beside it)."""
    root = policy_folder(tmp_path_factory.mktemp("fuzz"))
    (root / "support").mkdir()
    (root / "support" / "bundle.yaml").write_bytes((SUPPORT / "bundle.yaml").read_bytes())
    return root


SHIPPED = (SUPPORT / "bundle.yaml").read_text(encoding="utf-8")


@FUZZ
@given(text=_lines(SHIPPED))
def test_a_mutated_shipped_bundle_loads_or_is_a_policy_error(folder: Path, text: str) -> None:
    file = folder / "support" / "bundle.yaml"
    file.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        assert isinstance(load_bundle(file), Bundle)
    except PolicyError as e:
        assert e.issues and all(i.message and i.file for i in e.issues)


@FUZZ
@given(data=st.binary(max_size=2048))
def test_random_bytes_are_a_policy_error(folder: Path, data: bytes) -> None:
    file = folder / "support" / "bundle.yaml"
    file.write_bytes(data)
    with pytest.raises(PolicyError):
        load_bundle(file)


@FUZZ
@given(text=st.text(max_size=400))
def test_random_text_loads_or_is_a_policy_error(text: str) -> None:
    try:
        load_bundle_text(text, str(SUPPORT / "bundle.yaml"))
    except PolicyError as e:
        assert e.issues


TESTS = (SUPPORT / "tests" / "support.yaml").read_text(encoding="utf-8")


@settings(FUZZ, max_examples=25)
@given(text=_lines(TESTS))
def test_a_mutated_policy_test_file_runs_or_reports_its_errors(folder: Path, text: str) -> None:
    tests = folder / "support" / "tests"
    tests.mkdir(exist_ok=True)
    (tests / "support.yaml").write_bytes(text.encode("utf-8", "surrogatepass"))
    (folder / "support" / "bundle.yaml").write_bytes((SUPPORT / "bundle.yaml").read_bytes())
    report = run_bundle_tests(folder / "support")
    assert report.bundle is not None
    assert report.error is not None or report.results


CONDITION = policies_dir() / "conditions" / "distress"


@settings(FUZZ, max_examples=40)
@given(train=_lines((CONDITION / "train.jsonl").read_text(encoding="utf-8")[:3000]),
       spec=_lines((CONDITION / "condition.yaml").read_text(encoding="utf-8")))
def test_a_mutated_condition_dataset_reads_or_is_a_policy_error(
    tmp_path_factory: pytest.TempPathFactory, train: str, spec: str
) -> None:
    folder = tmp_path_factory.mktemp("condition")
    (folder / "train.jsonl").write_bytes(train.encode("utf-8", "surrogatepass"))
    (folder / "eval.jsonl").write_bytes((CONDITION / "eval.jsonl").read_bytes())
    (folder / "condition.yaml").write_bytes(spec.encode("utf-8", "surrogatepass"))
    try:
        assert isinstance(load_condition_data(folder), ConditionData)
    except PolicyError as e:
        assert all(i.file for i in e.issues)


CONCEPT = policies_dir() / "concepts" / "empathy"


@settings(FUZZ, max_examples=40)
@given(meta=_lines((CONCEPT / "concept.yaml").read_text(encoding="utf-8")),
       train=_lines((CONCEPT / "train.jsonl").read_text(encoding="utf-8")),
       noise=st.binary(max_size=16))
def test_a_mutated_concept_dataset_reads_or_is_a_vector_error(
    tmp_path_factory: pytest.TempPathFactory, meta: str, train: str, noise: bytes
) -> None:
    folder = tmp_path_factory.mktemp("concept")
    (folder / "concept.yaml").write_bytes(meta.encode("utf-8", "surrogatepass"))
    (folder / "train.jsonl").write_bytes(train.encode("utf-8", "surrogatepass") + noise)
    try:
        assert isinstance(load_concept(folder), Concept)
    except VectorError as e:
        assert str(e)
