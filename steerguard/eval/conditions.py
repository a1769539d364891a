"""Calibrate a bundle's activation conditions and measure them on held-out prompts.

Activations are the last prompt position of each chat-rendered text under each of the
condition's calibration contexts (system prompts), exactly what the runtime probe reads during
prefill. Shrinkage, direction and threshold are fit on the training split only
(steerguard.policy.activation.fit_condition); F1 per layer is shown for the
layers below the steering band so a layer change can be judged, and the layer with the best
cross-validated F1 on the training split is named as the one `select_layer` would pick.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from steerguard.policy.activation import (
    ActivationProbe,
    fit_condition,
    load_condition_data,
)
from steerguard.runtime.engine import SteeringEngine

TARGET_F1 = 0.9


class LayerScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    layer: int
    train_f1: float
    heldout_f1: float


class ConditionResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    layer: int  # the layer the bundle declares (the probe is calibrated there)
    precision: float
    recall: float
    f1: float
    n_pos: int
    n_neg: int
    train_f1: float
    selected_layer: int  # select_layer's choice among `scanned` (training data only)
    selected_heldout_f1: float
    per_layer: tuple[LayerScore, ...]
    meets_target: bool


def bundle_activations(bundle_dir: Path) -> dict[str, tuple[int, Path]]:
    """{condition: (layer, dataset folder)} as declared in bundle.yaml `activations:`."""
    spec = yaml.safe_load((bundle_dir / "bundle.yaml").read_text(encoding="utf-8")) or {}
    out = {}
    for name, entry in (spec.get("activations") or {}).items():
        dataset = entry.get("dataset") or f"../conditions/{name}"
        out[name] = (int(entry["layer"]), (bundle_dir / dataset).resolve())
    return out


def evaluate_condition(
    engine: SteeringEngine, name: str, layer: int, dataset: Path, max_scan_layer: int = 7
) -> tuple[ActivationProbe, ConditionResult]:
    data = load_condition_data(dataset)
    scanned = sorted({*range(min(max_scan_layer, engine.fingerprint.num_layers - 1) + 1), layer})
    fits = fit_condition(engine, name, data, scanned, model=engine.fingerprint.model_id)
    probes = {lay: fit.probe for lay, fit in fits.items()}
    # The layer select_layer would pick: best cross-validated F1 on training data only.
    chosen = max(scanned, key=lambda lay: (fits[lay].cv_f1, -lay))
    probe = probes[layer]
    held, train = probe.metrics, probe.train_metrics
    assert held is not None and train is not None  # both splits were given
    per_layer = tuple(
        LayerScore(layer=lay, train_f1=p.train_metrics.f1 if p.train_metrics else 0.0,
                   heldout_f1=p.metrics.f1 if p.metrics else 0.0)
        for lay, p in probes.items()
    )
    sel = probes[chosen].metrics
    result = ConditionResult(
        name=name, layer=layer, precision=held.precision, recall=held.recall, f1=held.f1,
        n_pos=held.n_pos, n_neg=held.n_neg, train_f1=train.f1, selected_layer=chosen,
        selected_heldout_f1=sel.f1 if sel else 0.0, per_layer=per_layer,
        meets_target=held.f1 >= TARGET_F1,
    )
    return probe, result


def evaluate_bundle(
    engine: SteeringEngine, bundle_dir: Path, save: bool
) -> list[ConditionResult]:
    """Calibrate every declared condition; with `save`, write bundle_dir/probes/<name>.json."""
    results = []
    for name, (layer, dataset) in bundle_activations(bundle_dir).items():
        probe, result = evaluate_condition(engine, name, layer, dataset)
        if save:
            (bundle_dir / "probes").mkdir(exist_ok=True)
            probe.save(bundle_dir / "probes" / f"{name}.json")
        results.append(result)
    return results
