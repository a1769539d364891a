"""The eval extra is optional: without it, evaluation says which extra to install."""

from __future__ import annotations

import pytest

from steerguard.errors import SteerguardError
from steerguard.eval.extra import EVAL_PACKAGES, eval_module, require_eval_extra


def test_a_missing_module_names_the_extra() -> None:
    with pytest.raises(SteerguardError, match=r"steerguard\[eval\]"):
        eval_module("steerguard_no_such_module")


def test_the_extra_is_installed_here_and_matches_pyproject() -> None:
    import tomllib
    from pathlib import Path

    require_eval_extra()
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    declared = pyproject["project"]["optional-dependencies"]["eval"]
    assert sorted(d.split(">")[0] for d in declared) == sorted(EVAL_PACKAGES.values())
