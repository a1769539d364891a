"""Shared CLI plumbing: user errors become one red line and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from steerguard.errors import SteerguardError

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)

DEFAULT_CONCEPTS = Path("policies/concepts")


def user_errors(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except SteerguardError as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None

    return wrapper


def quiet_transformers() -> None:
    """Library chatter (progress bars, deprecation notes) hides what the CLI says."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def load_engine(model: str, concepts: Path | None = DEFAULT_CONCEPTS, build: bool = True):
    """Load the model with a spinner, then its vectors (built from `concepts` when missing)."""
    from steerguard.runtime.engine import SteeringEngine
    from steerguard.runtime.loading import load_model
    from steerguard.vectors.library import VectorLibrary

    quiet_transformers()
    with err_console.status(f"loading model {model} ..."):
        loaded = load_model(model)
    engine = SteeringEngine(loaded)
    library = VectorLibrary(loaded.fingerprint)
    if build and concepts is not None and concepts.is_dir():
        library.load_into(engine, concepts)
    else:
        library.load_into(engine)
    return engine, library
