"""Steering visibly works on the bundled model: a sentiment vector moves VADER scores."""

from __future__ import annotations

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from steerguard.resources import concepts_dir
from steerguard.runtime.engine import GenerationParams
from steerguard.runtime.plan import SteeringPlan
from steerguard.vectors.datasets import load_concept

CONCEPTS = concepts_dir()
LAYERS = [8, 9, 10, 11, 12]
STRENGTH = 0.07  # per layer, relative to the layer's typical norm
# Measured on the first 8 held-out prompts, greedy, 40 tokens: unsteered about +0.35,
# +0.07 about +0.9, -0.07 about -0.1. The margins below leave room for numeric drift.
MARGIN = 0.25


@pytest.mark.real_model
def test_sentiment_vector_moves_vader_both_ways(real_engine) -> None:
    analyzer = SentimentIntensityAnalyzer()
    prompts = [
        [{"role": "user", "content": p.prompt}]
        for p in load_concept(CONCEPTS / "sentiment").eval_prompts[:8]
    ]
    params = GenerationParams(max_new_tokens=40)
    plans = {
        s: SteeringPlan.single("sentiment", s, LAYERS) if s else None
        for s in (-STRENGTH, 0.0, STRENGTH)
    }
    rows = [(s, p) for s in plans for p in prompts]
    results = real_engine.generate_batch([p for _, p in rows], [plans[s] for s, _ in rows], params)
    mean: dict[float, float] = {}
    for s in plans:
        scores = [
            analyzer.polarity_scores(r.text)["compound"]
            for (strength, _), r in zip(rows, results, strict=True)
            if strength == s
        ]
        mean[s] = sum(scores) / len(scores)
    assert mean[STRENGTH] > mean[0.0] + MARGIN, mean
    assert mean[-STRENGTH] < mean[0.0] - MARGIN, mean


@pytest.mark.real_model
def test_real_model_zero_strength_is_exact(real_engine) -> None:
    import torch

    prompt = [{"role": "user", "content": "What is a good name for a cat?"}]
    params = GenerationParams(max_new_tokens=12, return_logits=True)
    plain = real_engine.generate(prompt, None, params)
    zero = real_engine.generate(prompt, SteeringPlan.single("sentiment", 0.0, LAYERS), params)
    assert zero.token_ids == plain.token_ids
    assert torch.equal(zero.logits, plain.logits)
