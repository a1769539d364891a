"""Bounded regexes: a hostile pattern or input cannot stall the engine. What they cost at
their worst is measured by benchmarks/bench_textmatch.py."""

from __future__ import annotations

import pytest

from steerguard.policy import textmatch
from steerguard.policy.errors import EvaluationError
from steerguard.policy.textmatch import BoundedRegex, KeywordMatcher


def test_catastrophic_pattern_times_out() -> None:
    rx = BoundedRegex(r"(a|aa)+$")
    with pytest.raises(EvaluationError, match=r"took over 50 ms"):
        rx.search("a" * 5000 + "b")


def test_input_is_capped() -> None:
    rx = BoundedRegex(r"needle")
    assert rx.search("x" * textmatch.MAX_TEXT_CHARS + "needle") is None


def test_invalid_pattern_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid regex"):
        BoundedRegex("(")


def test_keyword_matcher_on_long_input() -> None:
    m = KeywordMatcher([f"word{i}" for i in range(200)])
    text = "nothing to see " * 20_000
    assert m.search(text) is None
    assert m.search(text + "word199") == (len(text), len(text) + len("word199"))
    assert m.search(text + "word1999") is None  # whole words only
