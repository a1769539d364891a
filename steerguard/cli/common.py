"""Shared CLI plumbing: user errors become one red line and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from steerguard.errors import SteerguardError
from steerguard.home import steerguard_home
from steerguard.resources import concepts_dir
from steerguard.runtime.bundled import BUNDLED

if TYPE_CHECKING:
    from steerguard.root import Steerguard
    from steerguard.runtime.engine import SteeringEngine

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)

DEFAULT_CONCEPTS = concepts_dir()


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except SteerguardError as exc:
            # soft_wrap: a path or value in the message must stay on one line to be copied
            # escaped: a message may hold brackets (pip extras, lists) that are not markup
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def quiet_transformers() -> None:
    """Library chatter (progress bars, deprecation notes) hides what the CLI says."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


@contextmanager
def model_loading(model: str) -> Iterator[None]:
    """A spinner while a model loads, without library chatter; the first use of the bundled
    model says that it converts the model, and how long that took."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from steerguard.runtime.loading import bundled_model_converted

    quiet_transformers()
    if model == BUNDLED and not bundled_model_converted():
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        started = time.perf_counter()
        with Progress(*columns, console=err_console, transient=True) as progress:
            progress.add_task(
                "converting the bundled model to safetensors (first run only, about 30 s)",
                total=None,
            )
            yield
        err_console.print(
            f"converted the bundled model in {time.perf_counter() - started:.0f} s "
            f"(first run only; kept under {steerguard_home()})",
            soft_wrap=True,
        )
        return
    with err_console.status(f"loading model {model} ..."):
        yield


def open_root(
    model: str | None = None,
    *,
    config: Path | None = None,
    bundle: Path | None = None,
    concepts: Path | None = None,
    audit: bool = True,
) -> Steerguard:
    """The composition root from the config file (or $STEERGUARD_CONFIG), the environment,
    and the options a command was given; None leaves a setting as configured."""
    from steerguard.config import SteerguardConfig
    from steerguard.root import Steerguard

    given = {"model": model, "bundle": bundle, "concepts": concepts}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if not audit:
        overrides["audit_enabled"] = False
    return Steerguard(SteerguardConfig.load(config, **overrides))


def load_engine(sg: Steerguard, vectors: bool | set[str] = True) -> SteeringEngine:
    """The root's engine, loaded with a spinner (and conversion progress on first use)."""
    with model_loading(sg.model):
        return sg.engine(vectors=vectors)


def bare_engine(model: str | None) -> SteeringEngine:
    """The model's engine with no vectors loaded: for commands that work on the library."""
    return load_engine(open_root(model, audit=False), vectors=False)
