"""`steerguard policy ...`: validate, test, explain and print the schema of policy bundles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from steerguard.inputfiles import MAX_JSONL_BYTES, InputFileError, load_yaml, read_text
from steerguard.policy.catalog import MappingCatalog
from steerguard.policy.engine import PolicyEngine
from steerguard.policy.errors import PolicyError, ProfileError
from steerguard.policy.explain import layer_span
from steerguard.policy.inputs import RequestContext, UserProfile
from steerguard.policy.loader import load_bundle
from steerguard.policy.schema import BundleSpec
from steerguard.policy.testing import PolicyTestFile, find_bundles, run_bundle_tests
from steerguard.resources import default_bundle_path, policies_dir

app = typer.Typer(help="Policy bundles: validate, test, explain, schema.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

PathArg = Annotated[
    Path,
    typer.Argument(
        help="A bundle folder, bundle file, or a folder of bundles (default: the shipped ones)."
    ),
]
HashesOpt = Annotated[
    Path | None,
    typer.Option("--hashes", help="JSON file mapping vector name -> content hash, to check pins."),
]
LayersOpt = Annotated[
    int | None,
    typer.Option("--num-layers", min=1,
                 help="Decoder layers of the model the bundle will steer, to check its layers."),
]


def _catalog(hashes: Path | None) -> MappingCatalog | None:
    if hashes is None:
        return None
    try:
        data = json.loads(read_text(hashes, MAX_JSONL_BYTES))
    except InputFileError as e:
        err.print(f"[red]error[/red] --hashes {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except ValueError as e:
        err.print(f"[red]error[/red] --hashes {hashes}: not JSON ({e})", highlight=False)
        raise typer.Exit(1) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        err.print(f"[red]error[/red] --hashes {hashes}: expected a JSON object mapping "
                  "vector name -> content hash", highlight=False)
        raise typer.Exit(1)
    return MappingCatalog(data)


def _print_policy_error(e: PolicyError) -> None:
    for issue in e.issues:
        err.print(f"[red]error[/red] {issue}", highlight=False, soft_wrap=True)


@app.command()
def validate(
    path: PathArg = policies_dir(), hashes: HashesOpt = None, num_layers: LayersOpt = None
) -> None:
    """Load every bundle under PATH and report every mistake with file, line and column."""
    bundles = find_bundles(path)
    if not bundles:
        err.print(f"[red]no policy bundle found under {path}[/red]")
        raise typer.Exit(1)
    catalog = _catalog(hashes)
    failed = 0
    for b in bundles:
        try:
            bundle = load_bundle(b, catalog, num_layers)
        except PolicyError as e:
            failed += 1
            _print_policy_error(e)
            continue
        s = bundle.spec
        out.print(
            f"[green]ok[/green] {s.name} revision {s.revision} ({bundle.content_hash[:12]}): "
            f"{len(s.rules)} rules, {len(s.vectors)} vectors, "
            f"{len(s.activations)} activation conditions",
            highlight=False,
        )
    raise typer.Exit(1 if failed else 0)


@app.command("test")
def test_cmd(
    path: PathArg = policies_dir(), hashes: HashesOpt = None, num_layers: LayersOpt = None
) -> None:
    """Run the YAML tests next to each bundle; fail when a test fails or none exists."""
    from steerguard.policy.activation import probe_metrics_summary  # torch: tests only

    bundles = find_bundles(path)
    catalog = _catalog(hashes)
    total = failed = 0
    bad = False
    for b in bundles:
        report = run_bundle_tests(b, catalog, num_layers)
        if report.error is not None:
            _print_policy_error(report.error)
            bad = True
        if report.bundle is None:
            continue
        name = report.bundle.spec.name
        if not report.results:
            err.print(f"[red]bundle {name} ({b}) has no policy test[/red] "
                      "(expected tests/*.yaml next to it)")
            bad = True
        for r in report.results:
            total += 1
            if r.ok:
                out.print(f"[green]PASS[/green] {name}: {r.name}", highlight=False)
            else:
                failed += 1
                out.print(f"[red]FAIL[/red] {name}: {r.name}  ({r.file})", highlight=False)
                for f in r.failures:
                    out.print(f"       {f}", highlight=False)
        n_rules = len(report.bundle.rules)
        covered = n_rules - len(report.uncovered)
        out.print(f"coverage {name}: {covered}/{n_rules} rules exercised", highlight=False)
        for rule_id in report.uncovered:
            out.print(f"  [yellow]not exercised[/yellow]: {rule_id}", highlight=False)
        for line in probe_metrics_summary(report.probes):
            out.print(f"  probe {line}", highlight=False)
        for cond in report.uncalibrated:
            out.print(
                f"  [yellow]activation condition {cond!r} has no calibrated probe[/yellow] "
                f"(probes/{cond}.json); precision/recall unknown",
                highlight=False,
            )
    if total == 0:
        err.print(f"[red]no policy test found under {path}[/red] (expected <bundle>/tests/*.yaml)")
        raise typer.Exit(1)
    out.print(f"{total - failed}/{total} cases passed", highlight=False)
    raise typer.Exit(1 if failed or bad else 0)


def _model_scores(
    policy: PolicyEngine, model: str, message: str, names: set[str]
) -> dict[str, float]:
    """Score activation conditions the way a request would: the model reads the message."""
    from steerguard.cli.common import load_engine, open_root

    sg = open_root(model, audit=False)
    engine = load_engine(sg, vectors=False)
    probes = sg.probes.for_policy(policy, engine)
    wanted = {n: probes[n] for n in names}
    states = engine.activations(
        [[{"role": "user", "content": message}]],
        sorted({layer for p in wanted.values() for layer in p.layers}),
    )
    return {n: float(p.score(states)[0]) for n, p in wanted.items()}


def _parse_scores(scores: list[str]) -> dict[str, float]:
    parsed = {}
    for s in scores:
        name, sep, value = s.partition("=")
        try:
            parsed[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise typer.BadParameter(
                f"--score {s!r}: expected NAME=NUMBER, e.g. harmful_request=0.9"
            )
    return parsed


@app.command()
def explain(
    message: Annotated[str, typer.Option("--message", "-m", help="The user's message.")],
    profile: Annotated[
        Path | None, typer.Option("--profile", "-p", help="Profile YAML/JSON file.")
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", "-b", help="Bundle folder or file.")
    ] = None,
    context: Annotated[
        Path | None, typer.Option("--context", "-c", help="Context YAML/JSON file.")
    ] = None,
    score: Annotated[
        list[str] | None,
        typer.Option("--score", "-s", help="Activation score NAME=VALUE (repeat)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the Decision as JSON.")] = False,
    model: Annotated[
        str | None,
        typer.Option(help="Model whose activations score the bundle's activation conditions "
                     "(those without --score); 'none' leaves them unscored."),
    ] = "smollm2-135m",
) -> None:
    """Decide for one message and show the decision and why."""
    try:
        engine = PolicyEngine(load_bundle(bundle or default_bundle_path()))
        prof = UserProfile.model_validate(load_yaml(profile)) if profile else None
        ctx = RequestContext.model_validate(load_yaml(context) or {}) if context else None
        scores = _parse_scores(score or [])
        missing = set(engine.activation_conditions) - set(scores)
        if missing and model and model != "none":
            scores.update(_model_scores(engine, model, message, missing))
        decision = engine.decide(
            [{"role": "user", "content": message}], prof, ctx, scores or None
        )
    except PolicyError as e:
        _print_policy_error(e)
        raise typer.Exit(1) from None
    except (ProfileError, InputFileError, ValueError, OSError) as e:
        err.print(f"[red]error[/red] {e}", highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        print(decision.model_dump_json(indent=2))
        return
    b = decision.bundle
    out.print(
        f"[bold]{b.name}[/bold] revision {b.revision} ({b.content_hash[:12]})  "
        f"decision {decision.decision_id}"
    )
    if decision.failed_closed:
        out.print(f"[red bold]FAILED CLOSED[/red bold]: {decision.error}", highlight=False)
        out.print("no steering; the caller must not answer")
        needed = ", ".join(engine.activation_conditions)
        if needed:
            out.print(
                "hint: the runtime supplies activation scores; "
                f"here pass --score NAME=0..1 for {needed}"
            )
        raise typer.Exit(2)
    if decision.matched:
        t = Table(title="matched rules", show_lines=False)
        for col in ("rule", "priority", "evidence"):
            t.add_column(col)
        for m in decision.matched:
            ev = "\n".join(f"{e.predicate} {e.source}: {e.describe()}" for e in m.evidence)
            t.add_row(m.rule_id, str(m.priority), ev)
        out.print(t)
    else:
        out.print("no rule matched")
    if decision.dropped:
        t = Table(title="dropped")
        for col in ("rule", "vector", "reason", "detail"):
            t.add_column(col)
        for d in decision.dropped:
            t.add_row(d.rule_id, d.vector or "", d.reason.value, d.detail)
        out.print(t)
    if decision.plan.interventions:
        t = Table(title="steering plan")
        for col in ("vector", "op", "strength", "layers", "positions", "from"):
            t.add_column(col)
        for i in decision.plan.interventions:
            t.add_row(
                i.vector,
                i.op.value,
                f"{i.strength:+.3f}",
                layer_span(i.layers),
                str(i.positions),
                i.source or "",
            )
        out.print(t)
    else:
        out.print("plan: no steering")
    if decision.error:
        out.print(f"[yellow]ignored (on_error open)[/yellow]: {decision.error}", highlight=False)


@app.command()
def schema(
    tests: Annotated[bool, typer.Option("--tests", help="The schema of test files.")] = False,
) -> None:
    """Print the JSON Schema of bundle files (or of test files), for editors."""
    model = PolicyTestFile if tests else BundleSpec
    print(json.dumps(model.model_json_schema(by_alias=True), indent=2))
