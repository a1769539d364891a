"""Shared CLI plumbing: user errors become one red line and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import typer
from rich.console import Console

from steerguard.errors import SteerguardError

if TYPE_CHECKING:
    from steerguard.runtime.engine import SteeringEngine
    from steerguard.runtime.loading import LoadedModel
    from steerguard.vectors.library import VectorLibrary

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)

# The repository's concept datasets, wherever the command runs from (as the default bundle).
DEFAULT_CONCEPTS = Path(__file__).resolve().parents[2] / "policies" / "concepts"


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
    """load_model with a spinner and without library chatter."""
    from steerguard.runtime.loading import load_model

    quiet_transformers()
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
