from __future__ import annotations

from pathlib import Path

import yaml

from steerguard.eval.concept_yaml import set_keys


def test_set_keys_replaces_and_appends_keeping_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "concept.yaml"
    path.write_text('# a comment\nname: x\ndescription: "keep: me"\nrecommended_strength: null\n')
    set_keys(path, {"recommended_strength": 0.06, "default_layers": [8, 9, 10]})
    text = path.read_text()
    assert text.startswith("# a comment\nname: x\n")
    assert yaml.safe_load(text) == {
        "name": "x", "description": "keep: me", "recommended_strength": 0.06,
        "default_layers": [8, 9, 10],
    }
    set_keys(path, {"recommended_strength": None})
    assert yaml.safe_load(path.read_text())["recommended_strength"] is None
