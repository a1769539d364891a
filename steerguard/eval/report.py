"""docs/results.md, written from stored results only: the latest evaluation and every
benchmarks/results/*.json. Run `python scripts/make_results.py` (or `steerguard eval --report`
to evaluate first); never edit the output by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerguard.eval.conditions import ConditionResult
from steerguard.eval.machine import machine
from steerguard.eval.run import ANSWERS_JSONL, EVAL_JSON, SWEEP_PNG
from steerguard.eval.summary import ConceptSummary
from steerguard.eval.tables import concept_table, conditions_table, per_layer_table, summary_table

REPO = Path(__file__).resolve().parents[2]
FIGURES = Path("docs/figures")
RESULTS_MD = Path("docs/results.md")
MAX_METRIC_ROWS = 40


def _git_commit(root: Path) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# benchmarks --------------------------------------------------------------------------------


def reproduce_command(script: Path) -> str:
    """The `python benchmarks/...` line from the script's docstring, else the plain call."""
    if script.is_file():
        for line in script.read_text(encoding="utf-8").splitlines()[:30]:
            match = re.search(r"(python benchmarks/\S+\.py[^#\n]*)", line)
            if match:
                return match.group(1).strip()
    return f"python benchmarks/{script.name}"


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Scalar leaves as (dotted key, text); lists of numbers become 'n values, min..max',
    lists of objects a row per leaf of each (`key.0.field`)."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for k, v in value.items():
            rows += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(value, list):
        if value and all(isinstance(x, int | float) for x in value):
            return [(prefix, f"{len(value)} values, {min(value):.4g}..{max(value):.4g}")]
        if value and all(isinstance(x, dict) for x in value):  # rounds, runs: one row each
            return [row for i, x in enumerate(value) for row in flatten(x, f"{prefix}.{i}")]
        return [(prefix, json.dumps(value)[:80])]
    if isinstance(value, float):
        return [(prefix, f"{value:.4g}")]
    return [(prefix, str(value))]


_MACHINE_KEYS = ("machine", "python", "cpus", "processor", "redis", "cluster_masters",
                 "torch_threads", "load_average", "torch", "transformers", "platform")


def benchmark_section(root: Path) -> str:
    files = sorted((root / "benchmarks" / "results").glob("*.json"))
    if not files:
        return "No benchmark results yet (benchmarks/results/*.json).\n"
    parts = []
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        name = path.stem
        script = root / "benchmarks" / f"bench_{name}.py"
        # A run with options (bench_audit.py --cluster) records its own command line.
        command = str(data.get("command") or reproduce_command(script)).strip()
        ran_on = {k: v for k, v in data.items() if k in _MACHINE_KEYS}
        metrics = flatten({k: v for k, v in data.items()
                           if k not in _MACHINE_KEYS and k != "command"})
        shown = metrics[:MAX_METRIC_ROWS]
        more = len(metrics) - len(shown)
        parts.append(
            f"### {name}\n\nReproduce: `{command}` "
            f"(writes `benchmarks/results/{path.name}`).\n\n"
            f"Ran on (as recorded by the benchmark): "
            f"{json.dumps(ran_on) if ran_on else 'not recorded'}.\n\n"
            "| metric | value |\n|---|---|\n"
            + "\n".join(f"| {k} | {v} |" for k, v in shown)
            + (f"\n| … | {more} more in the JSON |" if more else "")
            + "\n"
        )
    return "\n".join(parts)


# evaluation --------------------------------------------------------------------------------


def _examples(answers_path: Path, summaries: list[ConceptSummary]) -> str:
    if not answers_path.is_file():
        return ""
    rows = [json.loads(line) for line in answers_path.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    parts = ["One held-out prompt per concept, answered at the strongest negative, zero, "
             "recommended (or strongest positive) strength, and by system prompt:\n"]
    for s in summaries:
        mine = [r for r in rows if r["concept"] == s.concept]
        if not mine:
            continue
        prompt = mine[0]["prompt"]
        swept = sorted({r["strength"] for r in mine if r["strength"] is not None})
        pick = [swept[0], 0.0, s.recommended_strength or swept[-1]]
        parts.append(f"**{s.concept}** — _{prompt}_\n")
        for r in mine:
            if r["prompt"] != prompt:
                continue
            if r["strength"] in pick or r["condition"] == "system+":
                text = r["text"].replace("\n", " ").replace("|", "\\|")
                parts.append(f"- `{r['condition']}` ({s.judge} {r['score']:.2f}): {text}")
        parts.append("")
    return "\n".join(parts) + "\n"


def _described(info: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in info.items())


def _load(meta: dict[str, Any]) -> str:
    load = meta.get("load_average")
    return f"; 1-minute load average {load:.1f} at the end" if load else ""


def eval_section(figures: Path) -> str:
    path = figures / EVAL_JSON
    if not path.is_file():
        return "No evaluation yet: run `steerguard eval --report`.\n"
    data = json.loads(path.read_text(encoding="utf-8"))
    meta = data["meta"]
    summaries = [ConceptSummary.model_validate(c) for c in data["concepts"]]
    conditions = [ConditionResult.model_validate(c) for c in data["conditions"]]
    cfg = meta["config"]
    parts = [
        "## Steering efficacy\n",
        f"Command: `{meta['command']}` ({meta['seconds']} s of generation and judging"
        f"{_load(meta)}; machine: "
        + (_described(meta["machine"]) if "machine" in meta else "not recorded")
        + "). "
        f"Model `{meta['model']}`; {cfg['prompts_per_concept'] or 'all'} held-out prompts per "
        "concept (`steerguard/policies/concepts/<name>/eval.jsonl`, never used to build "
        "vectors); greedy decoding, "
        f"{cfg['max_new_tokens']} new tokens; per-layer strengths {cfg['strengths']} "
        "(relative to each layer's typical hidden-state norm) at each vector's layers.\n",
        "How answers are judged (`steerguard/eval/judges.py`, none of them the steered model): "
        "VADER compound for sentiment; a lexical formality score (formal minus informal "
        "markers — contractions, slang, exclamation marks, emoji — over all markers + 1); "
        "refusal-marker rate; length in words for concision (fewer = more concise, so its "
        "effect sign is flipped); distinct asking-before-acting markers (+1 for a question "
        "back) for caution; empathic minus dismissive lexicon markers for empathy. "
        "**Effect** = change of the mean score from unsteered, signed so that > 0 is toward "
        "the concept's positive pole.\n",
        "Cost: **perplexity** of each answer under the unsteered model, teacher-forced on the "
        "bare user prompt, answer tokens only, pooled per condition (exp of mean token NLL); "
        "**ppl ratio** is that over the unsteered answers' perplexity (greedy answers are the "
        "model's own most likely text, so any change raises it). **Repetition** = share of "
        "repeated word 3-grams. **Recommended strength** = the largest positive-side effect "
        f"whose ppl ratio is ≤ {meta['ppl_bound']} and whose effect exceeds its standard "
        "error (`none`: no strength qualified); it is written to each concept.yaml "
        "(`recommended_strength`, with `default_layers`). The negative side is chosen the "
        "same way.\n",
        "**Honest baseline**: no steering, the pole asked for in a system prompt "
        "(`Answer the user in this style: <positive|negative pole from concept.yaml>.`); "
        "rows `system+` / `system-`.\n",
        "### Summary\n", summary_table(summaries),
        f"\n![score and perplexity against strength]({FIGURES.name}/{SWEEP_PNG})\n",
    ]
    for s in summaries:
        parts += [f"\n### {s.concept} — {s.judge_description}\n", concept_table(s)]
    parts += ["\n### Example answers\n", _examples(figures / ANSWERS_JSONL, summaries)]
    parts += ["## Activation conditions\n",
              "Each shipped condition's probe, fit on `train.jsonl` only (per layer a "
              "shrinkage-LDA direction, shrinkage chosen by 5-fold cross-validation; several "
              "layers are read together by averaging their standardised projections; the "
              "F1-optimal threshold), measured on the held-out `eval.jsonl`, reading the last "
              "prompt position exactly as the runtime does. Every text is rendered under each "
              "of the condition's calibration contexts (condition.yaml: none, a generic "
              "system prompt, a tool-using support agent's, a chat the text continues), so "
              "counts are prompts × contexts. The calibrated probes are saved to "
              "`steerguard/policies/support/probes/<name>.json`.\n",
              conditions_table(conditions) if conditions else "none measured\n",
              *[_missed(r) for r in conditions if not r.meets_target],
              "\nHeld-out / cross-validated (training) F1 of single layers:\n",
              per_layer_table(conditions)]
    return "\n".join(parts)


def _missed(r: ConditionResult) -> str:
    return (
        f"\n**{r.name} misses the F1 ≥ 0.9 target** reading layers "
        f"{', '.join(map(str, r.layers))} (held-out F1 {r.f1:.2f}, cross-validated "
        f"{r.cv_f1:.2f}). The best single layer by cross-validation on training data is "
        f"{r.selected_layer} (held-out F1 {r.selected_heldout_f1:.2f}).\n"
    )


def update_conditions(conditions: Sequence[ConditionResult], root: Path = REPO) -> Path:
    """Replace the conditions in docs/figures/eval.json (concept results stay), then write
    docs/results.md."""
    path = root / FIGURES / EVAL_JSON
    data = json.loads(path.read_text(encoding="utf-8"))
    data["conditions"] = [c.model_dump(mode="json") for c in conditions]
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return write_report(None, root)


def write_report(eval_dir: Path | None = None, root: Path = REPO) -> Path:
    """Copy a fresh evaluation (if given) into docs/figures, then write docs/results.md."""
    figures = root / FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    if eval_dir is not None and (eval_dir / EVAL_JSON).is_file():
        for name in (EVAL_JSON, ANSWERS_JSONL, SWEEP_PNG):
            if (eval_dir / name).is_file():
                shutil.copyfile(eval_dir / name, figures / name)
    info = machine()
    text = "\n".join([
        "# steerguard results\n",
        "_Generated by `python scripts/make_results.py` from `docs/figures/eval.json` and "
        f"`benchmarks/results/*.json` at commit {_git_commit(root)}, "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Do not edit by hand: "
        "`steerguard eval --report` re-runs the evaluation and regenerates this file._\n",
        "Machine (this report): " + _described(info) + ".\n",
        eval_section(figures),
        "## Benchmarks\n",
        "Each benchmark writes its own JSON; the numbers below are copied from it.\n",
        benchmark_section(root),
    ])
    out = root / RESULTS_MD
    out.write_text(text, encoding="utf-8")
    return out
