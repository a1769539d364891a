"""Why activation probes are shrinkage LDA fit under several system prompts (docs/policy.md).

    python scripts/compare_probes.py [--layer 6]

For each shipped condition, fits a probe on the training split two ways (mean difference, and
shrinkage LDA with cross-validated shrinkage), each on bare messages only and on every
calibration context, and prints held-out F1 under each context separately.
"""

from __future__ import annotations

import argparse

import torch

from steerguard.policy.activation import (
    ConditionData,
    best_threshold,
    choose_shrinkage,
    lda_direction,
    load_condition_data,
    metrics_at,
)
from steerguard.resources import conditions_dir
from steerguard.runtime import load_model
from steerguard.runtime.engine import SteeringEngine

CONDITIONS = conditions_dir()
SPLITS = ("train_pos", "train_neg", "eval_pos", "eval_neg")


def states(
    engine: SteeringEngine, data: ConditionData, layer: int
) -> dict[str, list[torch.Tensor]]:
    """Per split, one [n, hidden] tensor per context (in the order of data.contexts)."""
    out: dict[str, list[torch.Tensor]] = {}
    for split in SPLITS:
        rows = engine.activations(data.prompts(getattr(data, split)), [layer])[layer]
        out[split] = [rows[c :: len(data.contexts)] for c in range(len(data.contexts))]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layer", type=int, default=6)
    args = parser.parse_args()
    engine = SteeringEngine(load_model())
    for folder in sorted(p for p in CONDITIONS.iterdir() if p.is_dir()):
        data = load_condition_data(folder)
        by_context = states(engine, data, args.layer)
        names = [
            "none" if c is None
            else "conversation" if isinstance(c, tuple)
            else "tool agent" if "<tools>" in c
            else "generic"
            for c in data.contexts
        ]
        for fit_on in ("bare", "all contexts"):
            picked = [0] if fit_on == "bare" else list(range(len(data.contexts)))
            group = len(picked)
            # text-major rows, as ConditionData.prompts orders them
            pos = torch.stack([by_context["train_pos"][c] for c in picked], 1).flatten(0, 1)
            neg = torch.stack([by_context["train_neg"][c] for c in picked], 1).flatten(0, 1)
            for method in ("mean difference", "shrinkage LDA"):
                shrinkage = 1.0 if method == "mean difference" else choose_shrinkage(
                    pos, neg, group=group)[0]
                direction = lda_direction(pos, neg, shrinkage)
                cut = best_threshold(pos @ direction, neg @ direction)
                scores = []
                for c, name in enumerate(names):
                    m = metrics_at(by_context["eval_pos"][c] @ direction,
                                   by_context["eval_neg"][c] @ direction, cut)
                    scores.append(f"{name} {m.f1:.2f}")
                print(f"{folder.name:16} layer {args.layer} {method:15} fit on {fit_on:12} "
                      f"held-out F1: {' / '.join(scores)}")


if __name__ == "__main__":
    main()
