"""Concept datasets: contrastive pairs on disk (steerguard/policies/concepts/<name>/)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from steerguard.errors import VectorError
from steerguard.inputfiles import InputFileError, json_lines, load_yaml

T = TypeVar("T", bound=BaseModel)


class ContrastPair(BaseModel):
    """Two texts that differ in the concept; `prompt` (optional) is the user turn both answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    positive: str
    negative: str
    prompt: str | None = None


class EvalPrompt(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str


class ConceptMeta(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str
    description: str = ""
    positive: str = "positive"
    negative: str = "negative"
    judge: str | None = None
    default_layers: list[int] | None = None
    recommended_strength: float | None = None


class Concept(BaseModel):
    model_config = ConfigDict(frozen=True)

    meta: ConceptMeta
    pairs: tuple[ContrastPair, ...]
    eval_prompts: tuple[EvalPrompt, ...]
    folder: Path
    dataset_hash: str


def read_jsonl(path: Path, model: type[T]) -> list[T]:
    """Parse one JSON object per line; errors name the file, line and field."""
    items: list[T] = []
    try:
        rows = json_lines(path)
    except InputFileError as exc:
        raise VectorError(str(exc)) from None
    for number, row in rows:
        try:
            items.append(model.model_validate(row))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(line)"
            raise VectorError(f"{path}:{number}: field {field!r}: {first['msg']}") from exc
    return items


def load_concept(folder: Path) -> Concept:
    folder = Path(folder)
    meta_path, train_path = folder / "concept.yaml", folder / "train.jsonl"
    for required in (meta_path, train_path):
        if not required.is_file():
            raise VectorError(f"concept folder {folder} lacks {required.name}")
    try:
        meta = ConceptMeta.model_validate(load_yaml(meta_path))
    except InputFileError as exc:
        raise VectorError(str(exc)) from None
    except ValidationError as exc:
        raise VectorError(f"{meta_path}: {exc}") from exc
    pairs = read_jsonl(train_path, ContrastPair)
    if len(pairs) < 2:
        raise VectorError(f"{train_path}: needs at least 2 pairs, found {len(pairs)}")
    eval_path = folder / "eval.jsonl"
    prompts = read_jsonl(eval_path, EvalPrompt) if eval_path.is_file() else []
    return Concept(
        meta=meta,
        pairs=tuple(pairs),
        eval_prompts=tuple(prompts),
        folder=folder,
        dataset_hash=hashlib.sha256(train_path.read_bytes()).hexdigest()[:16],
    )


def load_concepts(root: Path) -> list[Concept]:
    """Every concept folder under `root`, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise VectorError(f"concepts directory {root} does not exist")
    folders = sorted(p.parent for p in root.glob("*/concept.yaml"))
    if not folders:
        raise VectorError(f"no concept folders (with concept.yaml) under {root}")
    return [load_concept(f) for f in folders]
