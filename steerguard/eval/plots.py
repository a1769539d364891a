"""Matplotlib figures: judge score and perplexity ratio against strength, a panel per concept."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from steerguard.eval.summary import ConceptSummary


def plot_sweep(summaries: Sequence[ConceptSummary], path: Path) -> Path:
    from steerguard.eval.extra import eval_module

    eval_module("matplotlib").use("Agg")  # files only; never a window
    plt = eval_module("matplotlib.pyplot")

    cols = min(3, max(1, len(summaries)))
    rows = math.ceil(len(summaries) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows), squeeze=False)
    for ax, s in zip(axes.flat, summaries, strict=False):
        swept = [c for c in s.conditions if c.strength is not None]
        xs = [c.strength for c in swept]
        ax.errorbar(xs, [c.score_mean for c in swept], yerr=[c.score_std for c in swept],
                    color="tab:blue", marker="o", capsize=2, label=f"{s.judge} (steered)")
        for name, style in (("system+", "--"), ("system-", ":")):
            base = s.at(name)
            if base is not None:
                ax.axhline(base.score_mean, color="tab:green", linestyle=style, linewidth=1,
                           label=f"{name} prompt")
        if s.recommended_strength is not None:
            ax.axvline(s.recommended_strength, color="grey", linewidth=0.8)
        ax.set_title(f"{s.concept} (layers {s.layers[0]}-{s.layers[-1]})")
        ax.set_xlabel("strength per layer (x layer norm)")
        way = "higher" if s.sign > 0 else "lower"
        ax.set_ylabel(f"{s.judge} ({way} = positive pole)", fontsize=8)
        twin = ax.twinx()
        twin.plot(xs, [c.ppl_ratio for c in swept], color="tab:red", marker="s", markersize=3)
        twin.axhline(s.ppl_bound, color="tab:red", linestyle="--", linewidth=0.7)
        twin.set_ylabel("perplexity / unsteered", color="tab:red", fontsize=8)
        twin.tick_params(axis="y", colors="tab:red")
        ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(summaries):]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
