"""The whole evaluation on a tiny random model: files exist, parse, and record defaults."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from steerguard.eval.run import ANSWERS_JSONL, EVAL_JSON, EVAL_MD, SWEEP_PNG, evaluate
from steerguard.eval.sweep import BASELINES, SweepConfig
from steerguard.policy.activation import ActivationProbe
from steerguard.vectors.datasets import load_concepts

CONFIG = SweepConfig(strengths=(-0.1, 0.0, 0.1), prompts_per_concept=2, max_new_tokens=4,
                     batch_size=8)


def test_evaluate_writes_well_formed_outputs(tiny_engine, concepts_dir, bundle_dir, tmp_path):
    out = tmp_path / "out"
    concepts = load_concepts(concepts_dir)
    result = evaluate(tiny_engine, concepts, out, CONFIG, bundle_dir=bundle_dir, record=True)

    assert [f.name for f in result.files] == [EVAL_JSON, ANSWERS_JSONL, EVAL_MD, SWEEP_PNG]
    data = json.loads((out / EVAL_JSON).read_text())
    assert data["meta"]["config"]["strengths"] == [-0.1, 0.0, 0.1]
    assert {c["concept"] for c in data["concepts"]} == {"sentiment", "concision"}
    for concept in data["concepts"]:
        names = [c["condition"] for c in concept["conditions"]]
        assert names == ["-0.10", "0", "+0.10", *BASELINES]
        zero = next(c for c in concept["conditions"] if c["condition"] == "0")
        assert zero["effect"] == 0.0 and zero["n"] == 2
        assert concept["layers"] == [1, 2]

    answers = [json.loads(line) for line in (out / ANSWERS_JSONL).read_text().splitlines()]
    assert len(answers) == 2 * 2 * (3 + len(BASELINES))
    assert all(isinstance(a["text"], str) and a["tokens"] <= 4 for a in answers)
    assert (out / SWEEP_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / EVAL_MD).read_text()
    assert "| concept | judge |" in md and "## Activation conditions" in md

    # --record: concept.yaml gets the two keys, the probe lands next to the bundle.
    meta = yaml.safe_load((concepts_dir / "sentiment" / "concept.yaml").read_text())
    assert meta["default_layers"] == [1, 2]
    assert meta["name"] == "sentiment" and meta["judge"] == "vader"
    probe = ActivationProbe.load(bundle_dir / "probes" / "upset.json")
    assert probe.layer == 1 and probe.metrics is not None
    cond = data["conditions"][0]
    assert cond["name"] == "upset" and 0.0 <= cond["f1"] <= 1.0
    assert [p["layer"] for p in cond["per_layer"]] == [0, 1, 2, 3]


def test_zero_strength_rows_run_unsteered(tiny_engine, concepts_dir, tmp_path):
    from steerguard.runtime.engine import GenerationParams

    concepts = load_concepts(concepts_dir)[:1]
    config = SweepConfig(strengths=(0.0,), prompts_per_concept=1, max_new_tokens=4,
                         baselines=False)
    result = evaluate(tiny_engine, concepts, tmp_path / "o", config)
    prompt = [{"role": "user", "content": concepts[0].eval_prompts[0].prompt}]
    plain = tiny_engine.generate(prompt, None, GenerationParams(max_new_tokens=4))
    assert result.sweep.answers[0].text == plain.text.strip()


def test_report_collects_eval_and_benchmarks(tiny_engine, concepts_dir, tmp_path: Path):
    from steerguard.eval.report import write_report

    evaluate(tiny_engine, load_concepts(concepts_dir), tmp_path / "out", CONFIG)
    root = tmp_path / "repo"
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "benchmarks" / "bench_fake.py").write_text(
        '"""Fake.\n\n    python benchmarks/bench_fake.py --n 3   # writes it\n"""\n'
    )
    (root / "benchmarks" / "results" / "fake.json").write_text(json.dumps(
        {"machine": "box", "p99_ms": 1.23456, "runs": [1, 2, 3], "nested": {"x": 1}}
    ))
    path = write_report(tmp_path / "out", root=root)
    text = path.read_text()
    assert path == root / "docs" / "results.md"
    assert (root / "docs" / "figures" / SWEEP_PNG).is_file()
    assert "python benchmarks/bench_fake.py --n 3" in text
    assert "| p99_ms | 1.235 |" in text and "| nested.x | 1 |" in text
    assert "3 values, 1..3" in text and '"machine": "box"' in text
    assert "### Summary" in text and "eval_sweep.png" in text
    assert "torch" in text and "cores" in text
    # Regenerating without a new evaluation reads the copy in docs/figures.
    assert "### Summary" in write_report(None, root=root).read_text()


def test_conditions_only_recalibrates_and_keeps_the_concept_results(
    tiny_engine, concepts_dir, bundle_dir, tmp_path: Path
):
    from steerguard.eval.conditions import evaluate_bundle
    from steerguard.eval.report import update_conditions, write_report

    root = tmp_path / "repo"
    evaluate(tiny_engine, load_concepts(concepts_dir), tmp_path / "out", CONFIG,
             bundle_dir=bundle_dir)
    write_report(tmp_path / "out", root=root)
    before = json.loads((root / "docs" / "figures" / "eval.json").read_text())
    spec = (bundle_dir / "bundle.yaml").read_text().replace("{layer: 1,", "{layers: 1-2,")
    (bundle_dir / "bundle.yaml").write_text(spec)
    (result,) = evaluate_bundle(tiny_engine, bundle_dir, save=True)
    assert result.layers == (1, 2) and 0.0 <= result.cv_f1 <= 1.0
    assert ActivationProbe.load(bundle_dir / "probes" / "upset.json").layers == (1, 2)
    text = update_conditions([result], root=root).read_text()
    after = json.loads((root / "docs" / "figures" / "eval.json").read_text())
    assert after["concepts"] == before["concepts"]
    assert after["conditions"][0]["layers"] == [1, 2]
    assert "| upset | 1, 2 |" in text
