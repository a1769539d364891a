from __future__ import annotations

import json
import math
from pathlib import Path

from steerguard.eval.judges import JUDGES
from steerguard.eval.report import benchmark_section, flatten
from steerguard.eval.summary import summarize
from steerguard.eval.sweep import Answer, SweepOutput


def _answer(strength: float | None, score: float, nll_per_token: float,
            condition: str | None = None) -> Answer:
    label = condition or (f"{strength:+.2f}" if strength else "0")
    return Answer(concept="c", condition=label, strength=strength, prompt="p", text="t",
                  score=score, words=1.0, repetition=0.0, nll=nll_per_token * 10, tokens=10)


def _sweep(answers: list[Answer], judge: str = "vader") -> SweepOutput:
    return SweepOutput(answers=answers, layers={"c": (8, 9)}, judges={"c": JUDGES[judge]})


def test_recommends_largest_effect_within_the_perplexity_bound() -> None:
    base = math.log(2.0)
    answers = [
        _answer(0.0, 0.1, base),
        _answer(0.03, 0.3, base + math.log(1.2)),  # ratio 1.2
        _answer(0.06, 0.6, base + math.log(1.4)),  # ratio 1.4: the pick
        _answer(0.1, 0.9, base + math.log(3.0)),  # bigger effect, ratio 3: over the bound
        _answer(-0.06, -0.5, base + math.log(1.3)),
        _answer(None, 0.5, base, condition="system+"),
    ]
    (s,) = summarize(_sweep(answers), ppl_bound=1.5)
    assert s.recommended_strength == 0.06
    assert s.recommended_negative == -0.06
    rec = s.at_strength(0.06)
    assert rec is not None and math.isclose(rec.effect, 0.5) and math.isclose(rec.ppl_ratio, 1.4)
    assert s.at("system+").effect == 0.4
    assert [c.condition for c in s.conditions][-1] == "system+"


def test_effect_sign_follows_the_judge() -> None:
    answers = [_answer(0.0, 30.0, 1.0), _answer(0.05, 20.0, 1.0)]  # fewer words = concise
    (s,) = summarize(_sweep(answers, judge="length"))
    assert s.at_strength(0.05).effect == 10.0
    assert s.recommended_strength == 0.05


def test_no_recommendation_when_nothing_helps() -> None:
    answers = [_answer(0.0, 0.5, 1.0), _answer(0.05, 0.2, 1.0)]
    (s,) = summarize(_sweep(answers))
    assert s.recommended_strength is None


def test_effect_within_noise_is_not_recommended() -> None:
    # One refusal more in four answers: effect 0.25 with a standard error of about 0.32.
    answers = [_answer(0.0, x, 1.0) for x in (0.0, 0.0, 0.0, 1.0)]
    answers += [_answer(0.05, x, 1.0) for x in (0.0, 0.0, 1.0, 1.0)]
    (s,) = summarize(_sweep(answers, judge="refusal"))
    stats = s.at_strength(0.05)
    assert stats is not None and stats.effect == 0.25 and stats.effect_se > 0.25
    assert s.recommended_strength is None


def test_benchmark_rows_flatten_rounds_one_row_per_leaf() -> None:
    rows = dict(flatten({"rounds": [{"writer": 20000, "ratio": 0.36}, {"writer": 21000}],
                         "lat": [1.0, 3.5], "p95": 4.123456}))
    assert rows == {"rounds.0.writer": "20000", "rounds.0.ratio": "0.36",
                    "rounds.1.writer": "21000", "lat": "2 values, 1..3.5", "p95": "4.123"}


def test_benchmark_section_names_each_results_command(tmp_path: Path) -> None:
    """A results file names the script it came from, or records its own command line when
    the run took options (bench_audit.py --cluster writes audit_cluster.json)."""
    bench = tmp_path / "benchmarks"
    (bench / "results").mkdir(parents=True)
    (bench / "bench_audit.py").write_text('"""Audit.\n\n    python benchmarks/bench_audit.py'
                                          ' [--url U]\n"""\n')
    (bench / "results" / "audit.json").write_text(json.dumps({"writer": 1}))
    (bench / "results" / "audit_cluster.json").write_text(
        json.dumps({"writer": 2, "command": "python benchmarks/bench_audit.py --cluster"}))
    text = benchmark_section(tmp_path)
    assert "Reproduce: `python benchmarks/bench_audit.py [--url U]` (writes " in text
    assert "Reproduce: `python benchmarks/bench_audit.py --cluster` (writes " in text
    assert "| command |" not in text  # said once, as the Reproduce line
