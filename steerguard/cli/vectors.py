"""`steerguard vectors ...`: build, list, show, import and export steering vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from steerguard.cli.common import (
    DEFAULT_CONCEPTS,
    bare_engine,
    console,
    user_errors,
)
from steerguard.errors import VectorError
from steerguard.runtime.bundled import BUNDLED

app = typer.Typer(help="Build, inspect and move steering vectors.", no_args_is_help=True)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model spec or path.")]


@app.command()
@user_errors
def build(
    concepts: Annotated[Path, typer.Option(help="Folder of concept datasets.")] = DEFAULT_CONCEPTS,
    model: ModelOpt = BUNDLED,
    force: Annotated[
        bool, typer.Option(help="Extract every concept again, even when a stored or shipped "
                           "vector is up to date.")
    ] = False,
    root: Annotated[
        Path | None, typer.Option(help="Library folder (default: $STEERGUARD_HOME/vectors); "
                                  "vectors go in ROOT/<model>/. `--root steerguard/policies/"
                                  "vectors --force` rewrites the shipped ones.")
    ] = None,
    method: Annotated[
        str, typer.Option(help="mean_diff (difference of means) or pca_diff (first principal "
                          "component of the pair differences).")
    ] = "mean_diff",
    pooling: Annotated[
        str, typer.Option(help="Token pooling: mean_skip_first (mean over tokens, the first "
                          "left out) or last (the last token).")
    ] = "mean_skip_first",
) -> None:
    """Make a vector per concept: skips concepts whose data, method and pooling did not
    change, copies the shipped vector when it was made the same way for this model, and
    extracts the rest."""
    from steerguard.vectors.library import VectorLibrary

    if method not in ("mean_diff", "pca_diff"):
        raise VectorError(f"--method {method!r}: expected 'mean_diff' or 'pca_diff'")
    if pooling not in ("mean_skip_first", "last"):
        raise VectorError(f"--pooling {pooling!r}: expected 'mean_skip_first' or 'last'")
    engine = bare_engine(model)
    library = VectorLibrary(engine.fingerprint, root)
    vectors = library.build(
        engine, concepts, force=force, method=method, pooling=pooling  # type: ignore[arg-type]
    )
    table = Table("vector", "hash", "recommended layers", "best held-out separation")
    for v in vectors:
        best = max(v.extraction.layer_scores.values(), default=0.0)
        table.add_row(
            v.name, v.content_hash(), str(list(v.extraction.recommended_layers)), f"{best:.2f}"
        )
    console.print(table)
    console.print(f"saved in {library.folder}")


@app.command("list")
@user_errors
def list_(model: ModelOpt = BUNDLED) -> None:
    """List the stored vectors for the model."""
    from steerguard.vectors.library import VectorLibrary

    loaded = bare_engine(model)
    library = VectorLibrary(loaded.fingerprint)
    table = Table("vector", "hash", "method", "layers", "recommended")
    for v in library.load_all():
        table.add_row(
            v.name,
            v.content_hash(),
            v.extraction.method,
            f"{len(v.layers)}",
            str(list(v.extraction.recommended_layers)),
        )
    console.print(table)


@app.command()
@user_errors
def show(
    name: str, model: ModelOpt = BUNDLED, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Show a vector's metadata, per-layer norms and separation scores."""
    from steerguard.vectors.library import VectorLibrary

    vector = VectorLibrary(bare_engine(model).fingerprint).load(name)
    info = {
        **vector.metadata(),
        "content_hash": vector.content_hash(),
        "norms": {
            layer: round(float(vector.directions[layer].norm()), 4) for layer in vector.layers
        },
    }
    if as_json:
        print(json.dumps(info, indent=2))
        return
    console.print(f"[bold]{vector.name}[/] {vector.content_hash()}  {vector.description}")
    table = Table("layer", "norm", "held-out separation", "effect size")
    ex = vector.extraction
    for layer in vector.layers:
        table.add_row(
            str(layer),
            f"{info['norms'][layer]:.3f}",
            f"{ex.layer_scores.get(layer, float('nan')):.2f}",
            f"{ex.layer_effects.get(layer, float('nan')):.2f}",
        )
    console.print(table)


@app.command()
@user_errors
def export(
    name: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    fmt: Annotated[str, typer.Option("--format", help="gguf or safetensors.")] = "gguf",
    model: ModelOpt = BUNDLED,
) -> None:
    """Write a vector as a llama.cpp control vector (GGUF) or a steerguard safetensors file."""
    from steerguard.vectors.gguf_io import export_gguf
    from steerguard.vectors.library import VectorLibrary
    from steerguard.vectors.storage import save_vector

    vector = VectorLibrary(bare_engine(model).fingerprint).load(name)
    if fmt == "gguf":
        export_gguf(vector, output)
        if 0 in vector.layers:
            console.print("layer 0 left out: llama.cpp control vectors start at layer 1")
    elif fmt == "safetensors":
        save_vector(vector, output)
    else:
        raise VectorError(f"--format {fmt!r}: expected 'gguf' or 'safetensors'")
    console.print(f"wrote {output}")


@app.command("import")
@user_errors
def import_(
    file: Path,
    name: Annotated[str, typer.Option("--name", help="Name in the library.")],
    model: ModelOpt = BUNDLED,
) -> None:
    """Add a llama.cpp/repeng control vector (.gguf) or a steerguard .safetensors file."""
    from steerguard.vectors.gguf_io import import_gguf
    from steerguard.vectors.library import VectorLibrary
    from steerguard.vectors.steering_vector import SteeringVector
    from steerguard.vectors.storage import load_vector

    library = VectorLibrary(bare_engine(model).fingerprint)
    if file.suffix == ".gguf":
        vector = import_gguf(file, name, library.fingerprint)
    else:
        loaded = load_vector(file, library.fingerprint)
        # A new object, not model_copy: the cached content hash must cover the new name.
        vector = SteeringVector(
            name=name,
            fingerprint=loaded.fingerprint,
            directions=loaded.directions,
            extraction=loaded.extraction,
            description=loaded.description,
        )
    path = library.save(vector)
    console.print(f"imported {vector.name} ({vector.content_hash()}) -> {path}")
