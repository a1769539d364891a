"""Aggregate judged answers per concept and condition; pick the recommended strength.

Recommended strength: among the swept positive strengths, the one with the largest effect
(judge score moved toward the concept's positive pole, relative to unsteered) whose answer
perplexity stays within `ppl_bound` times the unsteered perplexity, and whose effect exceeds
its standard error (with 8 prompts one answer in eight is noise, not an effect). The same
rule on the negative side is reported too (policies use negative strengths for "casual").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from steerguard.eval.cost import perplexity
from steerguard.eval.sweep import Answer, SweepOutput

DEFAULT_PPL_BOUND = 1.5


class ConditionStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    condition: str
    strength: float | None
    n: int
    score_mean: float
    score_std: float
    effect: float  # (score - unsteered score) * judge sign: > 0 is toward the positive pole
    effect_se: float  # standard error of that difference of means
    perplexity: float
    ppl_ratio: float
    repetition: float
    words: float


class ConceptSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    concept: str
    judge: str
    judge_description: str
    sign: int
    layers: tuple[int, ...]
    conditions: tuple[ConditionStats, ...]
    recommended_strength: float | None
    recommended_negative: float | None
    ppl_bound: float

    def at(self, condition: str) -> ConditionStats | None:
        return next((c for c in self.conditions if c.condition == condition), None)

    def at_strength(self, strength: float | None) -> ConditionStats | None:
        if strength is None:
            return None
        return next((c for c in self.conditions if c.strength == strength), None)


def _se(scores: Sequence[float]) -> float:
    return statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else 0.0


def _stats(
    condition: str, answers: Sequence[Answer], sign: int, base: Sequence[float], base_ppl: float
) -> ConditionStats:
    scores = [a.score for a in answers]
    base_score = statistics.fmean(base)
    ppl = perplexity([(a.nll, a.tokens) for a in answers if a.tokens])
    mean = statistics.fmean(scores)
    return ConditionStats(
        condition=condition,
        strength=answers[0].strength,
        n=len(answers),
        score_mean=mean,
        score_std=statistics.pstdev(scores) if len(scores) > 1 else 0.0,
        effect=(mean - base_score) * sign,
        effect_se=math.hypot(_se(scores), _se(base)),
        perplexity=ppl,
        ppl_ratio=ppl / base_ppl if base_ppl and not math.isnan(base_ppl) else math.nan,
        repetition=statistics.fmean(a.repetition for a in answers),
        words=statistics.fmean(a.words for a in answers),
    )


def recommend(stats: Sequence[ConditionStats], bound: float, positive: bool) -> float | None:
    """Largest-effect strength on one side with ppl_ratio <= bound and an effect above its
    standard error (ties: the weaker strength)."""
    side = [
        s for s in stats
        if s.strength is not None and s.strength != 0 and (s.strength > 0) == positive
        and s.ppl_ratio <= bound and (s.effect > 0 if positive else s.effect < 0)
        and abs(s.effect) > s.effect_se
    ]
    if not side:
        return None
    best = max(side, key=lambda s: (abs(s.effect), -abs(s.strength or 0.0)))
    return best.strength


def summarize(sweep: SweepOutput, ppl_bound: float = DEFAULT_PPL_BOUND) -> list[ConceptSummary]:
    out = []
    for concept, judge in sweep.judges.items():
        answers = [a for a in sweep.answers if a.concept == concept]
        groups: dict[str, list[Answer]] = {}
        for a in answers:
            groups.setdefault(a.condition, []).append(a)
        base = groups.get("0")
        if not base:
            raise ValueError(f"concept {concept!r}: the sweep needs strength 0 (unsteered)")
        base_scores = [a.score for a in base]
        base_ppl = perplexity([(a.nll, a.tokens) for a in base if a.tokens])
        stats = [_stats(c, g, judge.sign, base_scores, base_ppl) for c, g in groups.items()]
        stats.sort(key=lambda s: (s.strength is None, s.strength or 0.0, s.condition))
        out.append(ConceptSummary(
            concept=concept, judge=judge.name, judge_description=judge.description,
            sign=judge.sign, layers=sweep.layers[concept], conditions=tuple(stats),
            recommended_strength=recommend(stats, ppl_bound, positive=True),
            recommended_negative=recommend(stats, ppl_bound, positive=False),
            ppl_bound=ppl_bound,
        ))
    return out
