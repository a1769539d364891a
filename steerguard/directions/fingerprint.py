"""Identity of a model, and the one check that a direction fits it."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

_LABELS = {
    "architecture": "architecture",
    "model_type": "model type",
    "hidden_size": "hidden size",
    "num_layers": "layer count",
    "model_id": "model",
}


class ModelFingerprint(BaseModel):
    """Enough of a model's shape and origin to refuse directions made for another model."""

    model_config = ConfigDict(frozen=True)

    model_id: str
    architecture: str
    model_type: str = ""
    hidden_size: int
    num_layers: int


def fit_problem(
    model: ModelFingerprint,
    *,
    made_for: ModelFingerprint | str | None,
    width: int,
    layers: Iterable[int],
) -> str | None:
    """Why per-layer directions of `width` values at `layers`, made for `made_for` (a
    fingerprint, a model id, or unknown), cannot be used on `model`; None when they fit.
    Steering vectors and activation probes are both checked here."""
    if isinstance(made_for, ModelFingerprint):
        for field, label in _LABELS.items():
            mine, theirs = getattr(model, field), getattr(made_for, field)
            if mine != theirs:
                return f"{label} {theirs!r}, the model has {mine!r}"
    if width != model.hidden_size:
        return f"hidden size {width}, the model has {model.hidden_size}"
    if isinstance(made_for, str) and made_for and made_for != model.model_id:
        return f"model {made_for!r}, the model is {model.model_id!r}"
    beyond = sorted(x for x in layers if not 0 <= x < model.num_layers)
    if beyond:
        return (f"layer{'s' if len(beyond) > 1 else ''} {', '.join(map(str, beyond))}, the "
                f"model has layers 0..{model.num_layers - 1}")
    return None
