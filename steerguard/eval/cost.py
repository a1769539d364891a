"""What steering costs: answer perplexity under the unsteered model, and repetition."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from steerguard.eval.judges import words
from steerguard.runtime.activations import left_pad, positions_from_mask
from steerguard.runtime.engine import Prompt, SteeringEngine


def repetition_rate(text: str, n: int = 3) -> float:
    """Fraction of word n-grams that repeat an earlier one (0: none, near 1: a loop)."""
    tokens = words(text)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def answer_nll(
    engine: SteeringEngine,
    prompts: Sequence[Prompt],
    answers: Sequence[Sequence[int]],
    batch_size: int = 8,
) -> list[tuple[float, int]]:
    """(summed negative log-likelihood, token count) of each answer given its prompt.

    Teacher-forced, unsteered (no hooks are installed outside generation), answer tokens
    only; an empty answer gives (0.0, 0).
    """
    out: list[tuple[float, int]] = []
    for start in range(0, len(prompts), batch_size):
        heads = [engine.encode(p) for p in prompts[start : start + batch_size]]
        tails = [list(a) for a in answers[start : start + batch_size]]
        longest = max(len(t) for t in tails)
        if longest == 0:
            out.extend((0.0, 0) for _ in tails)
            continue
        ids, mask = left_pad([h + t for h, t in zip(heads, tails, strict=True)],
                             engine.tokenizer.pad_token_id, engine.device)
        with torch.inference_mode():
            # Left padding puts every answer at the right edge: keep only those logits.
            logits = engine.model(
                input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                logits_to_keep=longest + 1,
            ).logits[:, :-1, :].float()
        logp = torch.log_softmax(logits, dim=-1)
        for row, tail in enumerate(tails):
            if not tail:
                out.append((0.0, 0))
                continue
            target = torch.tensor(tail, device=logp.device)
            picked = logp[row, longest - len(tail) :, :].gather(-1, target[:, None])
            out.append((float(-picked.sum()), len(tail)))
    return out


def perplexity(nll: Sequence[tuple[float, int]]) -> float:
    """exp(mean NLL per token) pooled over answers; NaN when there are no tokens."""
    total = sum(n for _, n in nll)
    return math.exp(sum(s for s, _ in nll) / total) if total else math.nan
