from __future__ import annotations

import math

import pytest
import torch

from steerguard.eval.cost import answer_nll, perplexity, repetition_rate


def test_repetition_rate() -> None:
    assert repetition_rate("the cat sat on the mat") == 0.0
    assert repetition_rate("a b c a b c a b c") == pytest.approx(4 / 7)
    assert repetition_rate("too short") == 0.0


def test_perplexity_pools_tokens() -> None:
    assert perplexity([(2.0, 2), (0.0, 0)]) == pytest.approx(math.e)
    assert math.isnan(perplexity([]))


def test_answer_nll_matches_an_unpadded_forward(tiny_engine) -> None:
    prompts = [[{"role": "user", "content": "Hi"}],
               [{"role": "user", "content": "A much longer question about several things?"}]]
    answers = [[100, 200, 300], [400]]
    batched = answer_nll(tiny_engine, prompts, answers)
    for prompt, answer, (nll, n) in zip(prompts, answers, batched, strict=True):
        ids = tiny_engine.encode(prompt) + answer
        with torch.inference_mode():
            logp = torch.log_softmax(tiny_engine.model(torch.tensor([ids])).logits[0].float(), -1)
        head = len(ids) - len(answer)
        want = -sum(float(logp[head - 1 + i, t]) for i, t in enumerate(answer))
        assert n == len(answer)
        assert nll == pytest.approx(want, rel=1e-3)
    assert answer_nll(tiny_engine, prompts[:1], [[]]) == [(0.0, 0)]
