"""`steerguard eval`: steering efficacy and cost per concept, activation-condition accuracy."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from steerguard.cli.common import (
    DEFAULT_CONCEPTS,
    bare_engine,
    console,
    err_console,
    load_engine,
    open_root,
    user_errors,
)
from steerguard.errors import PlanError
from steerguard.resources import default_bundle_path
from steerguard.runtime.bundled import BUNDLED


def _strengths(text: str) -> tuple[float, ...]:
    try:
        values = sorted({float(x) for x in text.split(",") if x.strip()} | {0.0})
    except ValueError:
        raise PlanError(f"--strengths {text!r}: expected numbers like '-0.1,0,0.1'") from None
    return tuple(values)  # 0 is always swept: every effect is measured against it


@user_errors
def evaluate(
    out: Annotated[
        Path, typer.Option(help="Folder for eval.json, eval.md, the PNG and all answers.")
    ] = Path(".steerguard/eval"),
    concepts: Annotated[Path, typer.Option(help="Concept folders.")] = DEFAULT_CONCEPTS,
    only: Annotated[list[str] | None, typer.Option(help="Evaluate only these concepts.")] = None,
    strengths: Annotated[
        str, typer.Option(help="Per-layer strengths to sweep (relative to layer norm).")
    ] = "-0.08,-0.04,-0.02,0,0.02,0.04,0.08",
    layers: Annotated[
        str | None, typer.Option(help="Steer these layers, e.g. '8-12' (default: each vector's "
                                      "recommended layers).")
    ] = None,
    prompts: Annotated[
        int | None, typer.Option(help="Held-out prompts per concept (default: all of them).")
    ] = None,
    tokens: Annotated[int, typer.Option(help="New tokens per answer.")] = 32,
    batch: Annotated[int, typer.Option(help="Rows per generation batch.")] = 16,
    ppl_bound: Annotated[float, typer.Option(help="Max perplexity / unsteered.")] = 1.5,
    baselines: Annotated[bool, typer.Option(help="Also ask for each pole by system prompt.")] = (
        True
    ),
    bundle: Annotated[
        Path | None, typer.Option(help="Policy bundle whose activation conditions to measure.")
    ] = default_bundle_path(),
    conditions: Annotated[bool, typer.Option(help="Measure activation conditions.")] = True,
    conditions_only: Annotated[
        bool, typer.Option("--conditions-only", help="Only (re)calibrate the bundle's "
                           "activation conditions; the concept results in docs/figures stay.")
    ] = False,
    record: Annotated[
        bool, typer.Option(help="Write recommended strengths to concept.yaml and probes to "
                                "the bundle.")
    ] = True,
    report: Annotated[
        bool, typer.Option(help="Then regenerate docs/results.md and docs/figures.")
    ] = False,
    threads: Annotated[
        int, typer.Option(help="Torch CPU threads; 1 is fastest on a shared, busy machine.")
    ] = 1,
    model: Annotated[str, typer.Option("--model", "-m")] = BUNDLED,
) -> None:
    """Sweep steering strength on held-out prompts, judge answers independently, report costs."""
    import torch
    from rich.progress import Progress

    from steerguard.cli.generate import _layers
    from steerguard.eval.extra import require_eval_extra
    from steerguard.eval.run import evaluate as run_eval
    from steerguard.eval.sweep import SweepConfig
    from steerguard.vectors.datasets import load_concepts

    if conditions_only:
        _conditions_only(bundle, model, record, report, threads)
        return
    require_eval_extra()
    chosen = [c for c in load_concepts(concepts) if not only or c.meta.name in only]
    if not chosen:
        raise PlanError(f"--only {only}: no such concepts under {concepts}")
    torch.set_num_threads(threads)  # oversubscribed threads slow torch 3-5x on shared CPUs
    engine = load_engine(open_root(model, concepts=concepts, audit=False))
    config = SweepConfig(strengths=_strengths(strengths), prompts_per_concept=prompts,
                         max_new_tokens=tokens, batch_size=batch, baselines=baselines,
                         layers=tuple(_layers(layers, ())) if layers else None)
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("generating and judging", total=None)
        result = run_eval(
            engine, chosen, out, config,
            bundle_dir=bundle if conditions and bundle is not None else None,
            record=record, ppl_bound=ppl_bound,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            command="steerguard " + shlex.join(sys.argv[1:]),
        )
    console.print(result.files[2].read_text(encoding="utf-8"), markup=False, highlight=False)
    console.print(f"wrote {', '.join(str(f) for f in result.files)}")
    if report:
        from steerguard.eval.report import write_report

        console.print(f"wrote {write_report(out)}")


def _conditions_only(bundle: Path | None, model: str, record: bool, report: bool,
                     threads: int) -> None:
    import torch

    from steerguard.eval.conditions import evaluate_bundle
    from steerguard.eval.report import REPO, update_conditions
    from steerguard.eval.tables import conditions_table

    if bundle is None:
        raise PlanError("--conditions-only needs --bundle")
    torch.set_num_threads(threads)
    engine = bare_engine(model)
    with err_console.status("calibrating activation conditions"):
        results = evaluate_bundle(engine, bundle, save=record)
    console.print(conditions_table(results), markup=False, highlight=False)
    if report:
        console.print(f"wrote {update_conditions(results, REPO)}")


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
