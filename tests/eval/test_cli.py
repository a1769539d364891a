from __future__ import annotations

import pytest
from typer.testing import CliRunner

from steerguard.cli.app import app
from steerguard.cli.evaluate import _strengths
from steerguard.errors import PlanError


def test_strengths_always_include_zero_and_sort() -> None:
    assert _strengths("0.1,-0.1") == (-0.1, 0.0, 0.1)
    with pytest.raises(PlanError):
        _strengths("a,b")


def test_eval_command_is_registered() -> None:
    result = CliRunner().invoke(app, ["eval", "--help"])
    assert result.exit_code == 0
    assert "--ppl-bound" in result.output and "--record" in result.output
