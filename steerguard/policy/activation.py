"""Activation conditions: a direction in the model's own prompt states, and a threshold.

Calibration is pure tensor math, done once per model and condition, on the training split:
  direction = normalise(C_s^-1 (mean(positive) - mean(negative))), the shrinkage LDA
      direction, where C_s = (1 - s) C + s (tr C / d) I and C is the pooled within-class
      covariance; s = 1 is the plain mean difference. The shrinkage s is chosen by 5-fold
      cross-validation on the training split (F1 of each held fold, pooled).
  projection p = h . direction for the hidden state h of the prompt's last token at `layer`
  threshold t = the projection cut that maximises F1 (or Youden's J) on the training split
  scale s = pooled within-class standard deviation of the training projections
Why LDA: early-layer states carry large directions of variance (topic, length) that a mean
difference also picks up; whitening them out moved held-out F1 of the shipped harmful-request
condition at layer 6 of SmolLM2-135M from about 0.6 to 0.8 (docs/policy.md has the table), at the
same runtime cost (one dot product).
A probe may read several layers: one such direction per layer, each projection standardised
by its training projections, p = mean_l (h_l . d_l - c_l) / s_l. On SmolLM2-135M no single
layer separates harmful requests with F1 0.9; layers 14-26 read together do (docs/policy.md).
The runtime scores a prompt with `probe.score(h) = sigmoid((p - t) / s)`, a number
in [0, 1] with the calibrated threshold at exactly 0.5; rules say `threshold: auto` (0.5) or a
stricter/looser probability. Precision, recall and F1 on the held-out split are kept in the
probe so `policy test` can report them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from steerguard.policy.datasets import (  # noqa: F401  (re-exported: calibration reads them)
    DEFAULT_CONTEXTS,
    ConditionData,
    Context,
    Prompt,
    load_condition_data,
)

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
        # Probes saved before multi-layer probes: {layer, direction, shrinkage} at the top.
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

    def direction_tensor(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The direction of a single-layer probe."""
        if len(self.parts) != 1:
            raise ValueError(f"probe {self.name!r} reads layers {self.layers}, not one")
        return self.parts[0].direction_tensor(dtype)

    def project(self, hidden: torch.Tensor | Mapping[int, torch.Tensor]) -> torch.Tensor:
        """Combined projection of hidden states ({layer: [..., hidden]}, or one tensor for a
        single-layer probe)."""
        if isinstance(hidden, torch.Tensor):
            hidden = {self.parts[0].layer: hidden} if len(self.parts) == 1 else {}
        missing = [p.layer for p in self.parts if p.layer not in hidden]
        if missing:
            raise ValueError(f"probe {self.name!r} needs hidden states of layers {missing}")
        return _project(self.parts, hidden)

    def score(self, hidden: torch.Tensor | Mapping[int, torch.Tensor]) -> torch.Tensor:
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


SHRINKAGE_GRID = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
CV_FOLDS = 5


def lda_direction(pos: torch.Tensor, neg: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """Unit shrinkage-LDA direction; `shrinkage` 1 gives the mean difference direction."""
    diff = mean_difference_direction(pos, neg).double()
    if shrinkage >= 1.0:
        return diff.float()
    p, n = pos.double(), neg.double()
    centered = torch.cat([p - p.mean(0), n - n.mean(0)])
    cov = centered.T @ centered / len(centered)
    target = torch.eye(cov.shape[0], dtype=cov.dtype) * cov.diagonal().mean()
    w = torch.linalg.solve((1 - shrinkage) * cov + shrinkage * target, diff)
    norm = w.norm()
    if not torch.isfinite(norm) or norm == 0:
        return diff.float()
    return (w / norm).float()


def _folds(n: int, k: int, group: int = 1) -> list[torch.Tensor]:
    """Deterministic interleaved folds: item i goes to fold (i // group) % k, so the `group`
    renderings of one text stay in one fold."""
    fold_of = (torch.arange(n) // group) % k
    return [torch.nonzero(fold_of == f).flatten() for f in range(k)]


def cross_validated_f1(
    pos: torch.Tensor,
    neg: torch.Tensor,
    shrinkage: float,
    criterion: Criterion = "f1",
    group: int = 1,
) -> float:
    """F1 pooled over CV_FOLDS held folds; direction and threshold fit on the other folds.
    Rows come in groups of `group` consecutive renderings of one text."""
    return cross_validated_f1_layers({0: pos}, {0: neg}, [0], criterion, group, shrinkage)


def choose_shrinkage(
    pos: torch.Tensor, neg: torch.Tensor, criterion: Criterion = "f1", group: int = 1
) -> tuple[float, float]:
    """(shrinkage, its cross-validated F1) from SHRINKAGE_GRID; ties go to more shrinkage."""
    scored = [(cross_validated_f1(pos, neg, s, criterion, group), s) for s in SHRINKAGE_GRID]
    f1, shrinkage = max(scored)  # equal F1: the larger (safer) shrinkage wins
    return shrinkage, f1


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
    pos, neg = pos_scores.double().flatten(), neg_scores.double().flatten()
    values = torch.cat([pos, neg]).unique(sorted=True)
    if len(values) == 1:
        return float(values[0])
    cuts = torch.cat([values[:1] - 1.0, (values[1:] + values[:-1]) / 2, values[-1:] + 1.0])
    # Counts at every cut at once: [cuts, n] comparisons, fine for thousands of examples.
    tp = (pos[None, :] >= cuts[:, None]).sum(1).double()
    fp = (neg[None, :] >= cuts[:, None]).sum(1).double()
    if criterion == "f1":
        value = 2 * tp / (2 * tp + fp + (len(pos) - tp)).clamp(min=1)
    else:
        tpr = tp / max(len(pos), 1)
        tnr = (len(neg) - fp) / len(neg) if len(neg) else torch.zeros_like(fp)
        value = tpr + tnr - 1.0
    return float(cuts[int(torch.argmax(value))])  # argmax: the first (lowest) of equal cuts


def _pooled_std(pos: torch.Tensor, neg: torch.Tensor) -> float:
    parts = [x - x.mean() for x in (pos, neg) if len(x) > 1]
    if not parts:
        return 1.0
    std = float(torch.cat(parts).std())
    return std if std > 1e-6 else 1.0


Split = Mapping[int, torch.Tensor]  # layer -> [n, hidden] states


def _project(parts: Sequence[ProbeLayer], hidden: Split) -> torch.Tensor:
    total: torch.Tensor | None = None
    for p in parts:
        h = hidden[p.layer]
        z = (h.float() @ p.direction_tensor().to(h.device) - p.center) / p.spread
        total = z if total is None else total + z
    assert total is not None
    return total / len(parts)


def _fit_parts(pos: Split, neg: Split, layers: Sequence[int], criterion: Criterion,
               group: int, shrinkage: float | None) -> tuple[ProbeLayer, ...]:
    """One LDA direction per layer (shrinkage by CV unless given). Several layers are put on
    one scale (centred between the class means, divided by the pooled spread) so each counts
    alike; a single layer keeps the raw projection."""
    parts = []
    for layer in layers:
        s = shrinkage
        if s is None:
            s, _ = choose_shrinkage(pos[layer], neg[layer], criterion, group)
        d = lda_direction(pos[layer], neg[layer], s)
        center, spread = 0.0, 1.0
        if len(layers) > 1:
            a, b = pos[layer].float() @ d, neg[layer].float() @ d
            center, spread = float((a.mean() + b.mean()) / 2), _pooled_std(a, b)
        parts.append(ProbeLayer(layer=layer, direction=tuple(d.tolist()), center=center,
                                spread=spread, shrinkage=s))
    return tuple(parts)


def cross_validated_f1_layers(
    pos: Split,
    neg: Split,
    layers: Sequence[int],
    criterion: Criterion = "f1",
    group: int = 1,
    shrinkage: float | None = None,
) -> float:
    """F1 pooled over CV_FOLDS held folds of a probe reading `layers`; every part (shrinkage
    too, unless given) and the threshold are fit on the other folds."""
    n_pos, n_neg = len(pos[layers[0]]), len(neg[layers[0]])
    k = min(CV_FOLDS, n_pos // group, n_neg // group)
    if k < 2:
        return 0.0
    tp = fp = fn = 0
    for held_pos, held_neg in zip(_folds(n_pos, k, group), _folds(n_neg, k, group), strict=True):
        keep_pos = torch.ones(n_pos, dtype=torch.bool)
        keep_pos[held_pos] = False
        keep_neg = torch.ones(n_neg, dtype=torch.bool)
        keep_neg[held_neg] = False
        fit_pos = {la: pos[la][keep_pos] for la in layers}
        fit_neg = {la: neg[la][keep_neg] for la in layers}
        parts = _fit_parts(fit_pos, fit_neg, layers, criterion, group, shrinkage)
        cut = best_threshold(_project(parts, fit_pos), _project(parts, fit_neg), criterion)
        hits = int((_project(parts, {la: pos[la][held_pos] for la in layers}) >= cut).sum())
        tp += hits
        fn += len(held_pos) - hits
        fp += int((_project(parts, {la: neg[la][held_neg] for la in layers}) >= cut).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def calibrate_layers(
    name: str,
    layers: Sequence[int],
    train_pos: Split,
    train_neg: Split,
    eval_pos: Split | None = None,
    eval_neg: Split | None = None,
    criterion: Criterion = "f1",
    model: str | None = None,
    shrinkage: float | None = None,
    group: int = 1,
    cv: bool = False,
) -> ActivationProbe:
    """Fit a probe reading `layers` on the training split and measure it on the held-out
    split. `shrinkage` None chooses it per layer by cross-validation on the training split,
    whose rows come in groups of `group` renderings of one text; `cv` also records the
    probe's own cross-validated F1."""
    layers = sorted(set(layers))
    parts = _fit_parts(train_pos, train_neg, layers, criterion, group, shrinkage)
    tp, tn = _project(parts, train_pos), _project(parts, train_neg)
    t = best_threshold(tp, tn, criterion)
    held = None
    if eval_pos is not None and eval_neg is not None:
        held = metrics_at(_project(parts, eval_pos), _project(parts, eval_neg), t)
    return ActivationProbe(
        name=name,
        parts=parts,
        threshold=t,
        scale=_pooled_std(tp, tn),
        metrics=held,
        train_metrics=metrics_at(tp, tn, t),
        cv_f1=cross_validated_f1_layers(train_pos, train_neg, layers, criterion, group)
        if cv else None,
        criterion=criterion,
        contexts=group,
        model=model,
    )


def calibrate_probe(
    name: str,
    layer: int,
    train_pos: torch.Tensor,
    train_neg: torch.Tensor,
    eval_pos: torch.Tensor | None = None,
    eval_neg: torch.Tensor | None = None,
    criterion: Criterion = "f1",
    model: str | None = None,
    shrinkage: float | None = None,
    group: int = 1,
) -> ActivationProbe:
    """A single-layer probe (calibrate_layers with one layer's [n, hidden] states)."""
    return calibrate_layers(
        name, [layer], {layer: train_pos}, {layer: train_neg},
        None if eval_pos is None else {layer: eval_pos},
        None if eval_neg is None else {layer: eval_neg},
        criterion=criterion, model=model, shrinkage=shrinkage, group=group,
    )


def best_layer(cv_f1: Mapping[int, float]) -> int:
    """The layer with the best cross-validated F1; ties go to the earlier layer (cheaper, and
    read before more of the steering)."""
    return max(cv_f1, key=lambda layer: (cv_f1[layer], -layer))


def select_layer(
    per_layer: dict[int, tuple[torch.Tensor, torch.Tensor]], criterion: Criterion = "f1"
) -> int:
    """The layer whose training activations separate best under cross-validation (held-out
    data stays untouched)."""
    return best_layer({layer: choose_shrinkage(pos, neg, criterion)[1]
                       for layer, (pos, neg) in per_layer.items()})


def probe_metrics_summary(probes: Sequence[ActivationProbe]) -> list[str]:
    lines = []
    for p in probes:
        m = p.metrics
        where = f"layer{'s' if len(p.layers) > 1 else ''} {', '.join(map(str, p.layers))}"
        if m is None:
            lines.append(f"{p.name} ({where}): no held-out metrics")
        else:
            lines.append(
                f"{p.name} ({where}): precision {m.precision:.2f} recall {m.recall:.2f} "
                f"F1 {m.f1:.2f} on {m.n_pos}+{m.n_neg} held-out prompt renderings "
                f"({p.contexts} contexts each)"
            )
    return lines


class _HasActivations(Protocol):
    def activations(
        self, prompts: Sequence[Prompt], layers: Sequence[int], pooling: str = ...
    ) -> dict[int, torch.Tensor]: ...


def fit_condition_probe(
    engine: _HasActivations,
    name: str,
    data: ConditionData,
    layers: Sequence[int],
    model: str | None = None,
) -> ActivationProbe:
    """Calibrate `name` reading `layers` together (one layer or several), with its
    cross-validated F1 on the training split and held-out metrics over all contexts."""
    group = len(data.contexts)
    layers = sorted(set(layers))
    texts = (data.train_pos, data.train_neg, data.eval_pos, data.eval_neg)
    tp, tn, ep, en = (engine.activations(data.prompts(t), layers, pooling="last") for t in texts)
    return calibrate_layers(name, layers, tp, tn, ep, en, model=model, group=group, cv=True)
