"""The `steerguard` command: thin shells over the packages."""

from __future__ import annotations

import importlib

import typer

from steerguard.cli import vectors
from steerguard.cli.demo import demo
from steerguard.cli.generate import generate

app = typer.Typer(
    help="Policy-driven, audited activation steering for local language models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(vectors.app, name="vectors")
app.command()(demo)
app.command()(generate)

# Sub-apps of other packages: mounted when present, so one missing piece never hides the rest.
for _module, _name in (("policy", "policy"), ("audit", "audit"), ("evaluate", "eval"),
                      ("serve", "serve")):
    try:
        _sub = importlib.import_module(f"steerguard.cli.{_module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"steerguard.cli.{_module}":
            raise
        continue
    if hasattr(_sub, "app"):
        app.add_typer(_sub.app, name=_name)
    if hasattr(_sub, "register"):
        _sub.register(app)


def main() -> None:
    app()
