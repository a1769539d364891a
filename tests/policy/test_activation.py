"""Calibration of activation conditions: direction, threshold, metrics, scoring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steerguard.policy.activation import (
    ActivationProbe,
    best_threshold,
    calibrate_probe,
    load_condition_data,
    mean_difference_direction,
    metrics_at,
    select_layer,
)

REPO = Path(__file__).resolve().parents[2]


def blobs(n: int, shift: float, seed: int, hidden: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    axis = torch.zeros(hidden)
    axis[3] = 1.0
    pos = torch.randn(n, hidden, generator=g) + shift * axis
    neg = torch.randn(n, hidden, generator=g) - shift * axis
    return pos, neg


def test_direction_is_unit_mean_difference() -> None:
    pos = torch.tensor([[2.0, 0.0], [4.0, 0.0]])
    neg = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    assert torch.allclose(mean_difference_direction(pos, neg), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="coincide"):
        mean_difference_direction(neg, neg)
    with pytest.raises(ValueError, match="equal width"):
        mean_difference_direction(pos, torch.zeros(2, 3))


def test_threshold_maximises_f1_and_metrics_are_right() -> None:
    pos = torch.tensor([2.0, 3.0, 4.0, 0.5])
    neg = torch.tensor([-1.0, 0.0, 1.0])
    t = best_threshold(pos, neg)
    assert 0.0 < t < 0.5  # all positives, one false positive: F1 8/9 beats 6/7
    m = metrics_at(pos, neg, t)
    assert (m.precision, m.recall) == (0.8, 1.0) and abs(m.f1 - 8 / 9) < 1e-9
    # Youden's J prefers no false positive: J = 0.75 + 1 - 1 at a cut between 1 and 2
    assert 1.0 < best_threshold(pos, neg, "youden") < 2.0


def test_calibrated_probe_separates_held_out_data_and_scores_half_at_threshold(
    tmp_path: Path,
) -> None:
    train_pos, train_neg = blobs(40, 3.0, seed=0)
    eval_pos, eval_neg = blobs(40, 3.0, seed=1)
    probe = calibrate_probe("harmful", 6, train_pos, train_neg, eval_pos, eval_neg)
    assert probe.metrics is not None and probe.metrics.f1 > 0.9
    assert probe.metrics.n_pos == 40 and probe.metrics.n_neg == 40
    d = probe.direction_tensor()
    assert abs(float(d.norm()) - 1.0) < 1e-5 and abs(float(d[3])) > 0.9
    at_threshold = d * probe.threshold
    assert abs(float(probe.score(at_threshold)) - 0.5) < 1e-5
    scores = probe.score(eval_pos)
    assert scores.shape == (40,) and float(scores.mean()) > 0.8
    path = tmp_path / "harmful.json"
    probe.save(path)
    assert ActivationProbe.load(path) == probe


def test_select_layer_prefers_the_separating_layer() -> None:
    noise = blobs(30, 0.0, seed=2)
    signal = blobs(30, 3.0, seed=3)
    assert select_layer({4: noise, 9: signal, 12: signal}) == 9


def test_shipped_condition_datasets_load() -> None:
    for name in ("harmful_request", "distress"):
        data = load_condition_data(REPO / "policies" / "conditions" / name)
        assert data.train_pos and data.train_neg and data.eval_pos and data.eval_neg
        assert not set(data.train_pos) & set(data.eval_pos)  # held out means held out


def test_bad_dataset_line_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": true}\n{"text": "b"}\n')
    (tmp_path / "eval.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"train.jsonl:2"):
        load_condition_data(tmp_path)
