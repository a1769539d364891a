"""The vectors and generate commands end to end, on a tiny model saved to disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerguard.cli.app import app
from steerguard.resources import concepts_dir
from steerguard.vectors.gguf_io import export_gguf
from tests.models import tiny_model
from tests.runtime.helpers import random_vector

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    loaded = tiny_model("llama")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("STEERGUARD_HOME", str(tmp_path / "home"))
    return tmp_path


def test_import_list_show_export_generate(tiny_dir, home) -> None:
    from steerguard.runtime.loading import load_model

    fingerprint = load_model(str(tiny_dir)).fingerprint
    vector = random_vector(tiny_model("llama")).model_copy(update={"fingerprint": fingerprint})
    gguf = export_gguf(vector, home / "in.gguf")
    model = ["--model", str(tiny_dir)]

    result = runner.invoke(app, ["vectors", "import", str(gguf), "--name", "mood", *model])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["vectors", "list", *model])
    assert "mood" in listed.output
    shown = runner.invoke(app, ["vectors", "show", "mood", "--json", *model])
    assert json.loads(shown.stdout)["extraction"]["method"] == "imported:gguf"

    out = home / "out.gguf"
    exported = runner.invoke(app, ["vectors", "export", "mood", "-o", str(out), *model])
    assert exported.exit_code == 0 and out.is_file()

    generated = runner.invoke(
        app,
        [
            "generate",
            "hello",
            "--vector",
            "mood",
            "--strength",
            "0.5",
            "--layers",
            "1-2",
            "--max-tokens",
            "4",
            "--json",
            *model,
        ],
    )
    assert generated.exit_code == 0, generated.output
    payload = json.loads(generated.stdout)
    assert [m["layer"] for m in payload["reports"][0]["layers"]] == [1, 2]


def test_user_errors_are_one_line_not_tracebacks(tiny_dir, home) -> None:
    model = ["--model", str(tiny_dir)]
    missing = runner.invoke(app, ["vectors", "show", "nope", *model])
    assert missing.exit_code == 2
    assert "no vector 'nope'" in missing.output
    assert "Traceback" not in missing.output
    bad_path = runner.invoke(app, ["vectors", "list", "--model", "./does/not/exist"])
    assert bad_path.exit_code == 2 and "is not a directory" in bad_path.output
    bad_file = home / "x.gguf"
    bad_file.write_text("not a gguf")
    imported = runner.invoke(app, ["vectors", "import", str(bad_file), "--name", "x", *model])
    assert imported.exit_code == 2 and "not a GGUF file" in imported.output


def test_vectors_build_with_method_and_pooling_rebuilds_when_they_change(tiny_dir, home) -> None:
    import shutil

    concepts = home / "concepts"
    shutil.copytree(concepts_dir() / "sentiment",
                    concepts / "sentiment")
    model = ["--model", str(tiny_dir), "--concepts", str(concepts)]

    def stored() -> dict:
        shown = runner.invoke(app, ["vectors", "show", "sentiment", "--json",
                                    "--model", str(tiny_dir)])
        assert shown.exit_code == 0, shown.output
        return json.loads(shown.output)["extraction"]

    built = runner.invoke(app, ["vectors", "build", "--method", "pca_diff", "--pooling", "last",
                                *model])
    assert built.exit_code == 0, built.output
    assert (stored()["method"], stored()["pooling"]) == ("pca_diff", "last")
    built = runner.invoke(app, ["vectors", "build", *model])  # defaults differ: rebuilt
    assert built.exit_code == 0, built.output
    assert (stored()["method"], stored()["pooling"]) == ("mean_diff", "mean_skip_first")
    bad = runner.invoke(app, ["vectors", "build", "--method", "median", *model])
    assert bad.exit_code == 2 and "expected 'mean_diff' or 'pca_diff'" in bad.output
