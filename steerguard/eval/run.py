"""One evaluation run: sweep, summarise, calibrate conditions, write files, record defaults."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from steerguard.eval.concept_yaml import set_keys
from steerguard.eval.conditions import ConditionResult, evaluate_bundle
from steerguard.eval.machine import machine
from steerguard.eval.plots import plot_sweep
from steerguard.eval.summary import DEFAULT_PPL_BOUND, ConceptSummary, summarize
from steerguard.eval.sweep import SweepConfig, SweepOutput, run_sweep
from steerguard.eval.tables import (
    concept_table,
    conditions_table,
    per_layer_table,
    summary_table,
)
from steerguard.runtime.engine import SteeringEngine
from steerguard.vectors.datasets import Concept

EVAL_JSON, ANSWERS_JSONL, EVAL_MD, SWEEP_PNG = (
    "eval.json", "answers.jsonl", "eval.md", "eval_sweep.png"
)


@dataclass
class EvalResult:
    summaries: list[ConceptSummary]
    conditions: list[ConditionResult]
    sweep: SweepOutput
    files: list[Path]


def evaluate(
    engine: SteeringEngine,
    concepts: Sequence[Concept],
    out_dir: Path,
    config: SweepConfig,
    *,
    bundle_dir: Path | None = None,
    record: bool = False,
    ppl_bound: float = DEFAULT_PPL_BOUND,
    progress: Callable[[int, int], None] | None = None,
    command: str = "steerguard eval",
) -> EvalResult:
    sweep = run_sweep(engine, concepts, config, progress)
    summaries = summarize(sweep, ppl_bound)
    conditions = evaluate_bundle(engine, bundle_dir, save=record) if bundle_dir else []
    if record:
        for concept, s in zip(concepts, summaries, strict=True):
            set_keys(concept.folder / "concept.yaml", {
                "recommended_strength": s.recommended_strength,
                "default_layers": list(s.layers),
            })
    meta = {
        "command": command,
        "model": engine.fingerprint.model_id,
        "config": asdict(config),
        "ppl_bound": ppl_bound,
        "seconds": round(sweep.seconds, 1),
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0],  # others share this CPU: read timings with it
        "machine": machine(),
    }
    files = write_outputs(out_dir, summaries, conditions, sweep, meta)
    return EvalResult(summaries, conditions, sweep, files)


def write_outputs(
    out_dir: Path,
    summaries: Sequence[ConceptSummary],
    conditions: Sequence[ConditionResult],
    sweep: SweepOutput,
    meta: dict[str, Any],
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": meta,
        "concepts": [s.model_dump(mode="json") for s in summaries],
        "conditions": [c.model_dump(mode="json") for c in conditions],
    }
    files = [out_dir / EVAL_JSON, out_dir / ANSWERS_JSONL, out_dir / EVAL_MD, out_dir / SWEEP_PNG]
    files[0].write_text(json.dumps(payload, indent=1, allow_nan=True) + "\n", encoding="utf-8")
    files[1].write_text(
        "".join(a.model_dump_json() + "\n" for a in sweep.answers), encoding="utf-8"
    )
    files[2].write_text(eval_markdown(summaries, conditions, meta), encoding="utf-8")
    plot_sweep(summaries, files[3])
    return files


def eval_markdown(
    summaries: Sequence[ConceptSummary],
    conditions: Sequence[ConditionResult],
    meta: dict[str, Any],
) -> str:
    parts = [
        f"# Steering evaluation ({meta['model']})\n",
        f"`{meta['command']}`, {meta['seconds']} s. Perplexity bound: "
        f"{meta['ppl_bound']}x unsteered.\n",
        "## Summary\n", summary_table(summaries),
    ]
    for s in summaries:
        parts += [f"\n## {s.concept} ({s.judge}: {s.judge_description})\n", concept_table(s)]
    if conditions:
        parts += ["\n## Activation conditions\n", conditions_table(conditions),
                  "\n", per_layer_table(conditions)]
    return "\n".join(parts)
