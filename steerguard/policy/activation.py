"""Activation conditions: a direction in the model's own prompt states, and a threshold.

Calibration is pure tensor math, done once per model and condition:
  direction = normalise(mean(positive activations) - mean(negative activations))
  projection p = h . direction for the hidden state h of the prompt's last token at `layer`
  threshold t = the projection cut that maximises F1 (or Youden's J) on the training split
  scale s = pooled within-class standard deviation of the training projections
The runtime scores a prompt with `probe.score(h) = sigmoid((h . direction - t) / s)`, a number
in [0, 1] with the calibrated threshold at exactly 0.5; rules say `threshold: auto` (0.5) or a
stricter/looser probability. Precision, recall and F1 on the held-out split are kept in the
probe so `policy test` can report them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

Criterion = Literal["f1", "youden"]


class ProbeMetrics(BaseModel):
    model_config = ConfigDict(frozen=True)

    precision: float
    recall: float
    f1: float
    accuracy: float
    n_pos: int
    n_neg: int


class ActivationProbe(BaseModel):
    """A calibrated condition: read `layer`, project on `direction`, compare to `threshold`."""

    model_config = ConfigDict(frozen=True)

    name: str
    layer: int = Field(ge=0)
    direction: tuple[float, ...] = Field(description="Unit vector, length = hidden size.")
    threshold: float = Field(description="Raw projection cut (score 0.5).")
    scale: float = Field(gt=0, description="Projection spread; sets how fast score saturates.")
    metrics: ProbeMetrics | None = Field(default=None, description="On held-out data.")
    train_metrics: ProbeMetrics | None = None
    criterion: Criterion = "f1"
    model: str | None = Field(default=None, description="Model fingerprint or id it fits.")

    def direction_tensor(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.tensor(self.direction, dtype=dtype)

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """h . direction for hidden states [..., hidden]."""
        d = self.direction_tensor().to(device=hidden.device, dtype=torch.float32)
        return hidden.float() @ d

    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        """Calibrated probability in [0, 1]; >= 0.5 exactly when the projection >= threshold."""
        return torch.sigmoid((self.project(hidden) - self.threshold) / self.scale)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ActivationProbe:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))


def mean_difference_direction(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Unit vector from the negative mean to the positive mean ([n, hidden] each)."""
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1]:
        raise ValueError(
            "expected [n, hidden] tensors of equal width, "
            f"got {tuple(pos.shape)} and {tuple(neg.shape)}"
        )
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("need at least one positive and one negative example")
    diff = pos.float().mean(0) - neg.float().mean(0)
    norm = diff.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("positive and negative means coincide; no direction to take")
    return diff / norm


def metrics_at(
    pos_scores: torch.Tensor, neg_scores: torch.Tensor, threshold: float
) -> ProbeMetrics:
    """Precision, recall, F1 and accuracy of `score >= threshold` as the positive call."""
    tp = int((pos_scores >= threshold).sum())
    fp = int((neg_scores >= threshold).sum())
    fn = len(pos_scores) - tp
    tn = len(neg_scores) - fp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = tp + fp + fn + tn
    return ProbeMetrics(
        precision=precision,
        recall=recall,
        f1=f1,
        accuracy=(tp + tn) / n if n else 0.0,
        n_pos=len(pos_scores),
        n_neg=len(neg_scores),
    )


def best_threshold(
    pos_scores: torch.Tensor, neg_scores: torch.Tensor, criterion: Criterion = "f1"
) -> float:
    """The cut between adjacent sorted scores that maximises F1 or Youden's J (ties: lowest)."""
    values = torch.cat([pos_scores, neg_scores]).float().unique(sorted=True)
    if len(values) == 1:
        return float(values[0])
    cuts = torch.cat([values[:1] - 1.0, (values[1:] + values[:-1]) / 2, values[-1:] + 1.0])
    best, best_cut = -math.inf, float(cuts[0])
    for cut in cuts.tolist():
        m = metrics_at(pos_scores, neg_scores, cut)
        if criterion == "f1":
            value = m.f1
        else:
            tnr = float((neg_scores < cut).float().mean()) if len(neg_scores) else 0.0
            value = m.recall + tnr - 1.0
        if value > best + 1e-12:
            best, best_cut = value, cut
    return best_cut


def _pooled_std(pos: torch.Tensor, neg: torch.Tensor) -> float:
    parts = [x - x.mean() for x in (pos, neg) if len(x) > 1]
    if not parts:
        return 1.0
    std = float(torch.cat(parts).std())
    return std if std > 1e-6 else 1.0


def calibrate_probe(
    name: str,
    layer: int,
    train_pos: torch.Tensor,
    train_neg: torch.Tensor,
    eval_pos: torch.Tensor | None = None,
    eval_neg: torch.Tensor | None = None,
    criterion: Criterion = "f1",
    model: str | None = None,
) -> ActivationProbe:
    """Fit direction and threshold on the training split; measure on the held-out split."""
    d = mean_difference_direction(train_pos, train_neg)
    tp, tn = train_pos.float() @ d, train_neg.float() @ d
    t = best_threshold(tp, tn, criterion)
    held = None
    if eval_pos is not None and eval_neg is not None:
        held = metrics_at(eval_pos.float() @ d, eval_neg.float() @ d, t)
    return ActivationProbe(
        name=name,
        layer=layer,
        direction=tuple(d.tolist()),
        threshold=t,
        scale=_pooled_std(tp, tn),
        metrics=held,
        train_metrics=metrics_at(tp, tn, t),
        criterion=criterion,
        model=model,
    )


@dataclass(frozen=True)
class ConditionData:
    """Texts of a condition dataset (policies/conditions/<name>), split and labelled."""

    train_pos: list[str]
    train_neg: list[str]
    eval_pos: list[str]
    eval_neg: list[str]


def load_condition_data(folder: str | Path) -> ConditionData:
    """Read train.jsonl and eval.jsonl, lines {"text": ..., "label": true|false}."""
    split: dict[str, tuple[list[str], list[str]]] = {}
    for part in ("train", "eval"):
        pos: list[str] = []
        neg: list[str] = []
        path = Path(folder) / f"{part}.jsonl"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, label = row["text"], row["label"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f'{path}:{n}: expected {{"text": str, "label": bool}}: {e}') from e
            if not isinstance(text, str) or not isinstance(label, bool):
                raise ValueError(f"{path}:{n}: expected text a string and label true/false")
            (pos if label else neg).append(text)
        split[part] = (pos, neg)
    return ConditionData(*split["train"], *split["eval"])


def select_layer(
    per_layer: dict[int, tuple[torch.Tensor, torch.Tensor]], criterion: Criterion = "f1"
) -> int:
    """The layer whose training activations separate best (held-out data stays untouched)."""

    def quality(layer: int) -> tuple[float, int]:
        pos, neg = per_layer[layer]
        d = mean_difference_direction(pos, neg)
        p, n = pos.float() @ d, neg.float() @ d
        m = metrics_at(p, n, best_threshold(p, n, criterion))
        return (m.f1, -layer)  # ties go to the earlier layer: cheaper and before steering

    return max(per_layer, key=quality)


def probe_metrics_summary(probes: Sequence[ActivationProbe]) -> list[str]:
    lines = []
    for p in probes:
        m = p.metrics
        if m is None:
            lines.append(f"{p.name} (layer {p.layer}): no held-out metrics")
        else:
            lines.append(
                f"{p.name} (layer {p.layer}): precision {m.precision:.2f} recall {m.recall:.2f} "
                f"F1 {m.f1:.2f} on {m.n_pos}+{m.n_neg} held-out prompts"
            )
    return lines
