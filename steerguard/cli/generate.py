"""`steerguard generate`: one prompt, unsteered and steered, side by side."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.columns import Columns
from rich.panel import Panel
from rich.table import Table

from steerguard.cli.common import DEFAULT_CONCEPTS, console, load_engine, open_root, user_errors
from steerguard.errors import PlanError
from steerguard.vectors.datasets import ConceptMeta, load_concept


def _layers(text: str | None, recommended: tuple[int, ...]) -> list[int]:
    if not text:
        if not recommended:
            raise PlanError("the vector recommends no layers; pass --layers, e.g. --layers 8-12")
        return list(recommended)
    layers: list[int] = []
    for part in text.split(","):
        try:
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                layers.extend(range(low, high + 1))
            else:
                layers.append(int(part))
        except ValueError:
            raise PlanError(f"--layers {text!r}: expected numbers like '10' or '8-12,14'") from None
    return layers


def _measured_defaults(vector: str) -> ConceptMeta:
    """The concept's metadata (recommended strength, default layers) when it is shipped."""
    folder = DEFAULT_CONCEPTS / vector
    if (folder / "concept.yaml").is_file():
        return load_concept(folder).meta
    return ConceptMeta(name=vector)


@user_errors
def generate(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    vector: Annotated[str, typer.Option("--vector", "-v", help="Vector name.")] = "sentiment",
    strength: Annotated[
        float | None,
        typer.Option("--strength", "-s", help="Per layer, relative to the layer's norm "
                     "(default: the concept's measured recommended_strength)."),
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(help="e.g. '8-12' (default: the concept's measured default_layers, else "
                     "the layers extraction recommends)."),
    ] = None,
    op: Annotated[str, typer.Option(help="add, ablate or clamp.")] = "add",
    positions: Annotated[str, typer.Option(help="all, prompt, generated or last_N.")] = "all",
    max_tokens: Annotated[int, typer.Option(help="New tokens per answer.")] = 60,
    model: Annotated[str | None, typer.Option("--model", "-m", help="default: configured")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Answer PROMPT twice, unsteered and steered, and show what each intervention did."""
    from steerguard.runtime.engine import GenerationParams
    from steerguard.runtime.plan import Intervention, Operation, Positions, SteeringPlan

    engine = load_engine(open_root(model, audit=False), vectors={vector})
    if vector not in engine.vectors:
        raise PlanError(
            f"--vector {vector!r}: not loaded (have: {', '.join(sorted(engine.vectors))})"
        )
    measured = _measured_defaults(vector)
    if strength is None:
        if measured.recommended_strength is None:
            raise PlanError(
                f"--strength: {vector!r} has no measured recommended_strength (steerguard eval "
                "records one when an effect passes its rule); pass one, e.g. --strength 0.04"
            )
        strength = measured.recommended_strength
    recommended = tuple(measured.default_layers or ()) or (
        engine.vectors[vector].extraction.recommended_layers
    )
    try:
        intervention = Intervention(
            vector=vector,
            strength=strength,
            layers=tuple(_layers(layers, recommended)),
            op=Operation(op),
            positions=Positions.parse(positions),
        )
    except ValueError as exc:
        raise PlanError(f"invalid intervention: {exc}") from None
    plan = SteeringPlan(interventions=(intervention,))
    messages = [{"role": "user", "content": prompt}]
    params = GenerationParams(max_new_tokens=max_tokens)
    plain, steered = engine.generate_batch([messages, messages], [None, plan], params)
    if as_json:
        print(
            json.dumps(
                {
                    "prompt": prompt,
                    "plan": plan.model_dump(mode="json"),
                    "unsteered": plain.text,
                    "steered": steered.text,
                    "reports": [r.model_dump(mode="json") for r in steered.reports],
                },
                indent=2,
            )
        )
        return
    console.print(
        Columns(
            [
                Panel(plain.text, title="unsteered", width=60),
                Panel(
                    steered.text,
                    title=f"{vector} {strength:+g} @ {list(intervention.layers)}",
                    width=60,
                ),
            ]
        )
    )
    table = Table("layer", "positions", "delta norm", "projection before", "after")
    for m in steered.reports[0].layers:
        table.add_row(
            str(m.layer),
            str(m.positions_affected),
            f"{m.delta_norm:.2f}",
            f"{m.projection_before:.2f}",
            f"{m.projection_after:.2f}",
        )
    console.print(table)
