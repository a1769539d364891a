"""Bounded regexes: a hostile pattern or input cannot stall the engine."""

from __future__ import annotations

import time

import pytest

from steerguard.policy import textmatch
from steerguard.policy.errors import EvaluationError
from steerguard.policy.textmatch import BoundedRegex, KeywordMatcher


def test_catastrophic_pattern_times_out_quickly() -> None:
    rx = BoundedRegex(r"(a|aa)+$")
    start = time.perf_counter()
    with pytest.raises(EvaluationError, match="took over"):
        rx.search("a" * 5000 + "b")
    assert time.perf_counter() - start < 0.5


def test_input_is_capped() -> None:
    rx = BoundedRegex(r"needle")
    assert rx.search("x" * textmatch.MAX_TEXT_CHARS + "needle") is None


def test_invalid_pattern_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid regex"):
        BoundedRegex("(")


def test_keyword_matcher_is_linear_on_long_input() -> None:
    m = KeywordMatcher([f"word{i}" for i in range(200)])
    start = time.perf_counter()
    assert m.search("nothing to see " * 20_000) is None
    assert time.perf_counter() - start < 1.0
