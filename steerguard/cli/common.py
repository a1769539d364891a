"""Shared CLI plumbing: user errors become one red line and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import typer
from rich.console import Console

from steerguard.errors import SteerguardError
from steerguard.resources import concepts_dir

if TYPE_CHECKING:
    from steerguard.runtime.engine import SteeringEngine
    from steerguard.runtime.loading import LoadedModel
    from steerguard.vectors.library import VectorLibrary

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
            err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True, markup=True)
            raise typer.Exit(2) from None

    return wrapper


def quiet_transformers() -> None:
    """Library chatter (progress bars, deprecation notes) hides what the CLI says."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def load_quietly(model: str) -> LoadedModel:
    """load_model with a spinner and without library chatter; the first use of the bundled
    model says that it converts the model, and how long that takes."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from steerguard.runtime.loading import BUNDLED, bundled_model_converted, load_model

    quiet_transformers()
    if model == BUNDLED and not bundled_model_converted():
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        started = time.perf_counter()
        with Progress(*columns, console=err_console, transient=True) as progress:
            progress.add_task(
                "converting the bundled model to safetensors (first run only, about 30 s)",
                total=None,
            )
            loaded = load_model(model)
        err_console.print(
            f"converted the bundled model in {time.perf_counter() - started:.0f} s "
            f"(first run only; kept in {loaded.source})",
            soft_wrap=True,
        )
        return loaded
    with err_console.status(f"loading model {model} ..."):
        return load_model(model)


def load_engine(
    model: str, concepts: Path | None = DEFAULT_CONCEPTS, names: set[str] | None = None
) -> tuple[SteeringEngine, VectorLibrary]:
    """Load the model, then its stored vectors, building the concepts in `concepts` (all, or
    those in `names`) first when missing."""
    from steerguard.runtime.engine import SteeringEngine
    from steerguard.vectors.library import VectorLibrary

    loaded = load_quietly(model)
    engine = SteeringEngine(loaded)
    library = VectorLibrary(loaded.fingerprint)
    library.load_into(engine, concepts, names)
    return engine, library
