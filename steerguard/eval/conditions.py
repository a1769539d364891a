"""Calibrate a bundle's activation conditions and measure them on held-out prompts.

Activations are the last prompt position of each chat-rendered text under each of the
condition's calibration contexts (system prompts), exactly what the runtime probe reads during
prefill. Shrinkage, directions and threshold are fit on the training split only
(steerguard.policy.activation.calibrate_layers) for the layers the bundle declares; F1 of
single layers across the model is shown beside it so a layer change can be judged, and the
single layer with the best cross-validated F1 on the training split is named.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from steerguard.inputfiles import load_yaml
from steerguard.policy.activation import (
    ActivationProbe,
    best_layer,
    calibrate_layers,
    choose_shrinkage,
    load_condition_data,
)
from steerguard.policy.schema import ActivationSpec
from steerguard.runtime.engine import SteeringEngine

TARGET_F1 = 0.9


class LayerScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    layer: int
    train_f1: float
    cv_f1: float
    heldout_f1: float


class ConditionResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    layers: tuple[int, ...]  # what the bundle declares; the probe reads them together
    precision: float
    recall: float
    f1: float
    n_pos: int
    n_neg: int
    train_f1: float
    cv_f1: float  # the declared probe's, cross-validated on the training split
    selected_layer: int  # the best single layer by cross-validation (training data only)
    selected_cv_f1: float
    selected_heldout_f1: float
    per_layer: tuple[LayerScore, ...]
    meets_target: bool


def bundle_activations(bundle_dir: Path) -> dict[str, tuple[tuple[int, ...], Path]]:
    """{condition: (layers, dataset folder)} as declared in bundle.yaml `activations:`."""
    spec = load_yaml(bundle_dir / "bundle.yaml") or {}
    out = {}
    for name, entry in (spec.get("activations") or {}).items():
        parsed = ActivationSpec.model_validate(entry)
        dataset = parsed.dataset or f"../conditions/{name}"
        out[name] = (parsed.read_layers, (bundle_dir / dataset).resolve())
    return out


def scan_layers(num_layers: int) -> list[int]:
    """Single layers shown beside the declared probe: all of a small model, else every other."""
    step = 1 if num_layers <= 16 else 2
    return list(range(0, num_layers, step))


def evaluate_condition(
    engine: SteeringEngine, name: str, layers: tuple[int, ...], dataset: Path
) -> tuple[ActivationProbe, ConditionResult]:
    data = load_condition_data(dataset)
    group = len(data.contexts)
    scanned = sorted({*scan_layers(engine.fingerprint.num_layers), *layers})
    texts = (data.train_pos, data.train_neg, data.eval_pos, data.eval_neg)
    tp, tn, ep, en = (engine.activations(data.prompts(t), scanned, pooling="last")
                      for t in texts)
    model = engine.fingerprint.model_id
    probe = calibrate_layers(name, layers, tp, tn, ep, en, model=model, group=group, cv=True)
    singles: dict[int, tuple[ActivationProbe, float]] = {}
    for layer in scanned:
        shrinkage, cv_f1 = choose_shrinkage(tp[layer], tn[layer], group=group)
        singles[layer] = (calibrate_layers(name, [layer], tp, tn, ep, en, model=model,
                                           shrinkage=shrinkage, group=group), cv_f1)
    # The best single layer by cross-validated F1 on training data only.
    chosen = best_layer({lay: cv for lay, (_, cv) in singles.items()})
    held, train = probe.metrics, probe.train_metrics
    assert held is not None and train is not None and probe.cv_f1 is not None
    per_layer = tuple(
        LayerScore(layer=lay, train_f1=p.train_metrics.f1 if p.train_metrics else 0.0,
                   cv_f1=cv, heldout_f1=p.metrics.f1 if p.metrics else 0.0)
        for lay, (p, cv) in singles.items()
    )
    sel = singles[chosen][0].metrics
    result = ConditionResult(
        name=name, layers=tuple(sorted(set(layers))), precision=held.precision,
        recall=held.recall, f1=held.f1, n_pos=held.n_pos, n_neg=held.n_neg,
        train_f1=train.f1, cv_f1=probe.cv_f1, selected_layer=chosen,
        selected_cv_f1=singles[chosen][1], selected_heldout_f1=sel.f1 if sel else 0.0,
        per_layer=per_layer, meets_target=held.f1 >= TARGET_F1,
    )
    return probe, result


def evaluate_bundle(
    engine: SteeringEngine, bundle_dir: Path, save: bool
) -> list[ConditionResult]:
    """Calibrate every declared condition; with `save`, write bundle_dir/probes/<name>.json."""
    results = []
    for name, (layers, dataset) in bundle_activations(bundle_dir).items():
        probe, result = evaluate_condition(engine, name, layers, dataset)
        if save:
            (bundle_dir / "probes").mkdir(exist_ok=True)
            probe.save(bundle_dir / "probes" / f"{name}.json")
        results.append(result)
    return results
