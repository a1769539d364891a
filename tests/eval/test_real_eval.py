"""The bundled model: steering sentiment moves the independent judge the right way."""

from __future__ import annotations

import pytest

from steerguard.resources import concepts_dir

pytestmark = pytest.mark.real_model


def test_sentiment_steering_moves_vader(tmp_path, real_engine) -> None:
    from steerguard.eval.run import evaluate
    from steerguard.eval.sweep import SweepConfig
    from steerguard.vectors.datasets import load_concept

    engine = real_engine  # the session's model and vectors: loaded once per test run
    concept = load_concept(concepts_dir() / "sentiment")
    config = SweepConfig(strengths=(-0.08, 0.0, 0.08), prompts_per_concept=3,
                         max_new_tokens=24, baselines=False)
    (summary,) = evaluate(engine, [concept], tmp_path, config).summaries
    low, high = summary.at_strength(-0.08), summary.at_strength(0.08)
    assert low is not None and high is not None
    assert high.score_mean > low.score_mean + 0.3
