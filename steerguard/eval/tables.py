"""Markdown tables of an evaluation (shared by `steerguard eval` and docs/results.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from steerguard.eval.conditions import ConditionResult
from steerguard.eval.summary import ConceptSummary


def _f(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if digits and x < 0 else f"{x:.{digits}f}"


def _strength(x: float | None) -> str:
    return "none" if x is None else f"{x:+.2f}"


def summary_table(summaries: Sequence[ConceptSummary]) -> str:
    head = ("| concept | judge | layers | recommended | effect there | ppl ratio there "
            "| system-prompt effect | its ppl ratio | negative side | effect there |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for s in summaries:
        rec, neg, sysp = (s.at_strength(s.recommended_strength),
                          s.at_strength(s.recommended_negative), s.at("system+"))
        rows.append(
            f"| {s.concept} | {s.judge} | {s.layers[0]}-{s.layers[-1]} "
            f"| {_strength(s.recommended_strength)} | {_f(rec.effect if rec else None)} "
            f"| {_f(rec.ppl_ratio if rec else None)} | {_f(sysp.effect if sysp else None)} "
            f"| {_f(sysp.ppl_ratio if sysp else None)} | {_strength(s.recommended_negative)} "
            f"| {_f(neg.effect if neg else None)} |"
        )
    return head + "\n".join(rows) + "\n"


def concept_table(s: ConceptSummary) -> str:
    head = ("| condition | n | score (mean ± sd) | effect ± se | perplexity | ppl ratio "
            "| repetition | words |\n|---|---|---|---|---|---|---|---|\n")
    rows = [
        f"| {c.condition} | {c.n} | {_f(c.score_mean)} ± {_f(c.score_std)} "
        f"| {_f(c.effect)} ± {c.effect_se:.2f} "
        f"| {_f(c.perplexity)} | {_f(c.ppl_ratio)} | {_f(c.repetition)} | {c.words:.1f} |"
        for c in s.conditions
    ]
    return head + "\n".join(rows) + "\n"


def _span(layers: Sequence[int]) -> str:
    return ", ".join(map(str, layers))


def conditions_table(results: Sequence[ConditionResult]) -> str:
    head = ("| condition | layers read | precision | recall | F1 (held-out) | n pos + neg "
            "| train F1 | CV F1 (train) | target F1 ≥ 0.9 | best single layer by CV F1 |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    rows = [
        f"| {r.name} | {_span(r.layers)} | {r.precision:.2f} | {r.recall:.2f} | {r.f1:.2f} "
        f"| {r.n_pos} + {r.n_neg} | {r.train_f1:.2f} | {r.cv_f1:.2f} "
        f"| {'met' if r.meets_target else 'missed'} "
        f"| layer {r.selected_layer}: CV {r.selected_cv_f1:.2f}, "
        f"held-out {r.selected_heldout_f1:.2f} |"
        for r in results
    ]
    return head + "\n".join(rows) + "\n"


def per_layer_table(results: Sequence[ConditionResult]) -> str:
    if not results:
        return ""
    layers = [p.layer for p in results[0].per_layer]
    head = ("| condition | " + " | ".join(f"L{x}" for x in layers) + " |\n|---|"
            + "---|" * len(layers) + "\n")
    rows = [
        f"| {r.name} (held-out / CV) | "
        + " | ".join(f"{p.heldout_f1:.2f} / {p.cv_f1:.2f}" for p in r.per_layer) + " |"
        for r in results
    ]
    return head + "\n".join(rows) + "\n"
