"""An activation probe: a direction per layer in a model's prompt states, and a calibrated
threshold. The runtime reads it during prefill; `steerguard.policy.activation` fits it.

Read at the prompt's last token, p = mean over parts of (h_l . d_l - center_l) / spread_l
(one part: the raw projection), and `probability(p) = sigmoid((p - threshold) / scale)` is a
number in [0, 1] with the calibrated threshold at exactly 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from steerguard.directions.fingerprint import ModelFingerprint, fit_problem

Criterion = Literal["f1", "youden"]


class ProbeMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)

    precision: float
    recall: float
    f1: float
    accuracy: float
    n_pos: int
    n_neg: int


class ProbeLayer(BaseModel):
    """One layer a probe reads: its projection, standardised by the training projections
    (`center` between the class means, `spread` the pooled within-class deviation)."""

    model_config = ConfigDict(frozen=True)

    layer: int = Field(ge=0)
    direction: tuple[float, ...] = Field(description="Unit vector, length = hidden size.")
    center: float = 0.0
    spread: float = Field(default=1.0, gt=0)
    shrinkage: float = Field(
        default=1.0, ge=0, le=1, description="LDA covariance shrinkage; 1 = mean difference."
    )

    def direction_tensor(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.tensor(self.direction, dtype=dtype)


class ActivationProbe(BaseModel):
    """A calibrated condition: read each part's layer, project on its direction, average the
    standardised projections (one part: the raw projection), compare to `threshold`."""

    model_config = ConfigDict(frozen=True)

    name: str
    parts: tuple[ProbeLayer, ...] = Field(min_length=1)
    threshold: float = Field(description="Cut on the combined projection (score 0.5).")
    scale: float = Field(gt=0, description="Projection spread; sets how fast score saturates.")
    metrics: ProbeMetrics | None = Field(default=None, description="On held-out data.")
    train_metrics: ProbeMetrics | None = None
    cv_f1: float | None = Field(default=None, description="Cross-validated on training data.")
    criterion: Criterion = "f1"
    contexts: int = Field(default=1, ge=1, description="System prompts each text was fit under.")
    model: str | None = Field(default=None, description="Model fingerprint or id it fits.")

    @model_validator(mode="before")
    @classmethod
    def _single_layer_form(cls, data: Any) -> Any:
        # The single-layer file form: {layer, direction, shrinkage} at the top.
        if isinstance(data, dict) and "parts" not in data and "layer" in data:
            data = dict(data)
            part = {k: data.pop(k) for k in ("layer", "direction", "shrinkage") if k in data}
            data["parts"] = (part,)
        return data

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(p.layer for p in self.parts)

    @property
    def layer(self) -> int:
        """The last layer read: where the score is known during a forward pass."""
        return max(self.layers)

    @property
    def width(self) -> int:
        return len(self.parts[0].direction)

    def direction_tensor(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The direction of a single-layer probe."""
        if len(self.parts) != 1:
            raise ValueError(f"probe {self.name!r} reads layers {self.layers}, not one")
        return self.parts[0].direction_tensor(dtype)

    def fit_problem(self, model: ModelFingerprint) -> str | None:
        """Why this probe cannot read `model`'s states (None when it can)."""
        widths = {len(p.direction) for p in self.parts}
        width = self.width if len(widths) == 1 else -1
        return fit_problem(model, made_for=self.model, width=width, layers=self.layers)

    def project(self, hidden: torch.Tensor | Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Combined projection of hidden states ({layer: [..., hidden]}, or one tensor for a
        single-layer probe)."""
        if isinstance(hidden, torch.Tensor):
            hidden = {self.parts[0].layer: hidden} if len(self.parts) == 1 else {}
        missing = [p.layer for p in self.parts if p.layer not in hidden]
        if missing:
            raise ValueError(f"probe {self.name!r} needs hidden states of layers {missing}")
        return project(self.parts, hidden)

    def score(self, hidden: torch.Tensor | Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Calibrated probability in [0, 1]; >= 0.5 exactly when the projection >= threshold."""
        return torch.sigmoid((self.project(hidden) - self.threshold) / self.scale)

    def probability(self, projection: float) -> float:
        """`score` of a combined projection the runtime read."""
        z = (projection - self.threshold) / self.scale
        return 1.0 / (1.0 + math.exp(-z)) if z > -60 else 0.0

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ActivationProbe:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))


def project(parts: Sequence[ProbeLayer], hidden: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """Mean over `parts` of each layer's standardised projection."""
    total: torch.Tensor | None = None
    for p in parts:
        h = hidden[p.layer]
        z = (h.float() @ p.direction_tensor().to(h.device) - p.center) / p.spread
        total = z if total is None else total + z
    assert total is not None
    return total / len(parts)
