"""Sweep steering strength per concept over held-out prompts; judge every answer.

Every (prompt, condition) pair is one row; rows with different plans share a batch, so one
decode loop serves several strengths at once. Conditions are the swept strengths (0 is the
unsteered model, run with no plan at all) and the honest baseline: the same behaviour asked
for in a system prompt, toward each pole, with no steering.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from steerguard.eval.cost import answer_nll, repetition_rate
from steerguard.eval.judges import Judge, judge_for, length_words
from steerguard.runtime.engine import GenerationParams, SteeringEngine
from steerguard.runtime.plan import SteeringPlan
from steerguard.vectors.datasets import Concept

# Up to about the known-visible 0.07 per layer over five layers (0.3 breaks fluency); a
# first run at 0.03/0.06/0.1 put the 1.5x perplexity bound between 0.03 and 0.06 for most
# concepts, so the grid is denser there.
DEFAULT_STRENGTHS = (-0.08, -0.04, -0.02, 0.0, 0.02, 0.04, 0.08)
BASELINES = ("system+", "system-")  # system prompt asking for the positive / negative pole


class Answer(BaseModel):
    """One judged answer."""

    model_config = ConfigDict(frozen=True)

    concept: str
    condition: str  # a strength like "+0.08", or a baseline name
    strength: float | None  # None for system-prompt baselines
    prompt: str
    text: str
    score: float
    words: float
    repetition: float
    nll: float
    tokens: int


@dataclass(frozen=True)
class SweepConfig:
    strengths: tuple[float, ...] = DEFAULT_STRENGTHS
    prompts_per_concept: int | None = None  # None: every held-out prompt
    max_new_tokens: int = 32
    batch_size: int = 16
    baselines: bool = True
    layers: tuple[int, ...] | None = None  # None: each vector's recommended layers


@dataclass
class _Row:
    concept: Concept
    judge: Judge
    layers: tuple[int, ...]
    condition: str
    strength: float | None
    prompt: str
    messages: list[dict[str, str]]
    plan: SteeringPlan | None


@dataclass
class SweepOutput:
    answers: list[Answer] = field(default_factory=list)
    layers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    judges: dict[str, Judge] = field(default_factory=dict)
    seconds: float = 0.0


def condition_label(strength: float) -> str:
    return f"{strength:+.2f}" if strength else "0"


def baseline_instruction(pole: str) -> str:
    """The system prompt that asks for one pole, worded from concept.yaml (no tuning)."""
    return f"Answer the user in this style: {pole}."


def _rows(concept: Concept, layers: tuple[int, ...], config: SweepConfig) -> list[_Row]:
    judge = judge_for(concept.meta.judge, concept.meta.name)
    rows = []
    for item in concept.eval_prompts[: config.prompts_per_concept]:
        user = {"role": "user", "content": item.prompt}
        for s in config.strengths:
            plan = SteeringPlan.single(concept.meta.name, s, layers) if s else None
            rows.append(_Row(concept, judge, layers, condition_label(s), s, item.prompt,
                             [user], plan))
        if config.baselines:
            for label, pole in zip(BASELINES, (concept.meta.positive, concept.meta.negative),
                                   strict=True):
                system = {"role": "system", "content": baseline_instruction(pole)}
                rows.append(_Row(concept, judge, layers, label, None, item.prompt,
                                 [system, user], None))
    return rows


def run_sweep(
    engine: SteeringEngine,
    concepts: Sequence[Concept],
    config: SweepConfig,
    progress: Callable[[int, int], None] | None = None,
) -> SweepOutput:
    """Generate and judge every row; perplexity is of the answer to the bare user prompt."""
    started = time.perf_counter()
    out = SweepOutput()
    rows: list[_Row] = []
    for concept in concepts:
        vector = engine.vectors[concept.meta.name]
        layers = config.layers or tuple(vector.extraction.recommended_layers or vector.layers)
        out.layers[concept.meta.name] = layers
        out.judges[concept.meta.name] = judge_for(concept.meta.judge, concept.meta.name)
        rows.extend(_rows(concept, layers, config))
    params = GenerationParams(max_new_tokens=config.max_new_tokens, temperature=0.0)
    done = 0
    for start in range(0, len(rows), config.batch_size):
        batch = rows[start : start + config.batch_size]
        results = engine.generate_batch([r.messages for r in batch], [r.plan for r in batch],
                                        params)
        # Cost is judged against the plain question, so baselines and steering compare alike.
        nll = answer_nll(engine, [r.messages[-1:] for r in batch],
                         [res.token_ids for res in results], batch_size=config.batch_size)
        for row, res, (loss, n) in zip(batch, results, nll, strict=True):
            text = res.text.strip()
            out.answers.append(Answer(
                concept=row.concept.meta.name, condition=row.condition, strength=row.strength,
                prompt=row.prompt, text=text, score=row.judge.score(text),
                words=length_words(text), repetition=repetition_rate(text),
                nll=loss if n else math.nan, tokens=n,
            ))
        done += len(batch)
        if progress is not None:
            progress(done, len(rows))
    out.seconds = time.perf_counter() - started
    return out
