"""Calibration of activation conditions: direction, threshold, metrics, scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from steerguard.policy.activation import (
    ActivationProbe,
    best_threshold,
    calibrate_layers,
    calibrate_probe,
    choose_shrinkage,
    load_condition_data,
    mean_difference_direction,
    metrics_at,
    select_layer,
)
from steerguard.policy.errors import PolicyError
from steerguard.resources import conditions_dir

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


def nuisance_blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The label shifts dim 0 by 1; a shared, much larger nuisance moves dims 0 and 1 alike,
    so the mean difference (along dim 0) is swamped and only whitening separates."""
    g = torch.Generator().manual_seed(seed)

    def draw(label: float) -> torch.Tensor:
        nuisance = 3.0 * torch.randn(n, 1, generator=g)
        x = nuisance + 0.2 * torch.randn(n, 2, generator=g)
        x[:, 0] += label
        return torch.cat([x, 0.2 * torch.randn(n, 6, generator=g)], dim=1)

    return draw(1.0), draw(0.0)


def test_cross_validated_lda_beats_mean_difference_under_a_nuisance_direction() -> None:
    train_pos, train_neg = nuisance_blobs(60, seed=4)
    eval_pos, eval_neg = nuisance_blobs(60, seed=5)
    shrinkage, cv_f1 = choose_shrinkage(train_pos, train_neg)
    assert shrinkage < 1.0 and cv_f1 > 0.9
    lda = calibrate_probe("c", 3, train_pos, train_neg, eval_pos, eval_neg)
    plain = calibrate_probe("c", 3, train_pos, train_neg, eval_pos, eval_neg, shrinkage=1.0)
    assert lda.parts[0].shrinkage == shrinkage
    assert lda.metrics is not None and plain.metrics is not None
    assert lda.metrics.f1 > 0.9 > 0.75 > plain.metrics.f1


def test_select_layer_prefers_the_separating_layer() -> None:
    noise = blobs(30, 0.0, seed=2)
    signal = blobs(30, 3.0, seed=3)
    assert select_layer({4: noise, 9: signal, 12: signal}) == 9


def test_shipped_condition_datasets_load() -> None:
    for name in ("harmful_request", "distress"):
        data = load_condition_data(conditions_dir() / name)
        assert data.train_pos and data.train_neg and data.eval_pos and data.eval_neg
        assert not set(data.train_pos) & set(data.eval_pos)  # held out means held out


def test_bad_dataset_line_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": true}\n{"text": "b"}\n')
    (tmp_path / "eval.jsonl").write_text("")
    with pytest.raises(PolicyError, match=r"train.jsonl:2:1, field label: .*label is missing"):
        load_condition_data(tmp_path)


def test_shipped_conditions_calibrate_under_several_system_prompts() -> None:
    data = load_condition_data(conditions_dir() / "distress")
    assert data.contexts[0] is None and len(data.contexts) >= 3
    assert any(c and "<tools>" in c for c in data.contexts)  # a tool-using agent's prompt
    prompts = data.prompts(["I am furious", "hello"])
    assert len(prompts) == 2 * len(data.contexts)
    assert prompts[0] == [{"role": "user", "content": "I am furious"}]  # text-major order
    assert prompts[1][0]["role"] == "system" and prompts[1][-1]["content"] == "I am furious"
    assert prompts[len(data.contexts)][-1]["content"] == "hello"
    conversation = next(p for p in prompts if [m["role"] for m in p][-2:] == ["assistant", "user"])
    assert conversation[-1]["content"] == "I am furious"  # a later turn of a chat


def test_bad_contexts_name_the_file_and_what_was_expected(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": true}\n'
                                          '{"text": "b", "label": false}\n')
    (tmp_path / "eval.jsonl").write_text("")
    (tmp_path / "condition.yaml").write_text("contexts: 3\n")
    with pytest.raises(PolicyError, match=r"condition.yaml:1:11, field contexts: .*; expected "
                       "a non-empty list"):
        load_condition_data(tmp_path)
    (tmp_path / "condition.yaml").write_text(
        "contexts:\n  - null\n  - [{role: bot, content: hi}]\n"
    )
    with pytest.raises(PolicyError, match=r"condition.yaml:3:5, field contexts\[1\]: not a context"
                       r".*role \(system, user or assistant\)"):
        load_condition_data(tmp_path)


def test_cross_validation_keeps_renderings_of_one_text_in_one_fold() -> None:
    from steerguard.policy.activation import _folds

    folds = _folds(12, 2, group=3)
    assert [f.tolist() for f in folds] == [[0, 1, 2, 6, 7, 8], [3, 4, 5, 9, 10, 11]]


def test_a_probe_reading_several_layers_beats_each_alone() -> None:
    """Two layers each carry the label weakly, with independent noise: averaging their
    standardised projections separates better than either layer (what deep conditions do)."""

    def layered(n: int, seed: int) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
        g = torch.Generator().manual_seed(seed)
        pos = {la: torch.randn(n, 6, generator=g) + torch.tensor([0.9, 0, 0, 0, 0, 0])
               for la in (2, 5)}
        neg = {la: torch.randn(n, 6, generator=g) for la in (2, 5)}
        return pos, neg

    train_pos, train_neg = layered(300, seed=7)
    eval_pos, eval_neg = layered(300, seed=8)
    both = calibrate_layers("c", [5, 2], train_pos, train_neg, eval_pos, eval_neg, cv=True)
    assert both.layers == (2, 5) and both.layer == 5 and both.cv_f1 is not None
    for layer in (2, 5):
        alone = calibrate_layers("c", [layer], train_pos, train_neg, eval_pos, eval_neg)
        assert both.metrics is not None and alone.metrics is not None
        assert both.metrics.f1 > alone.metrics.f1 + 0.03
    at_cut = both.score(eval_pos)
    assert at_cut.shape == (300,) and float(at_cut.mean()) > 0.6
    with pytest.raises(ValueError, match="needs hidden states of layers"):
        both.score(eval_pos[2])
    with pytest.raises(ValueError, match="not one"):
        both.direction_tensor()


def test_single_layer_probes_saved_before_parts_still_load(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"name": "old", "layer": 6, "direction": [0.6, 0.8],
                                "threshold": 0.1, "scale": 0.5, "shrinkage": 0.25}))
    probe = ActivationProbe.load(path)
    assert probe.layers == (6,) and probe.parts[0].shrinkage == 0.25
    assert abs(float(probe.project(torch.tensor([1.0, 1.0]))) - 1.4) < 1e-6
