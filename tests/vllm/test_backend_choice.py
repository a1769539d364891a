"""Choosing the vllm backend where vLLM is not installed (the main venv): a clear
configuration error naming the setting, before anything is built."""

from __future__ import annotations

import pytest

from steerguard.config import ConfigError, SteerguardConfig
from steerguard.root import Steerguard
from tests.vllm.conftest import HAS_VLLM


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_backend_vllm_without_vllm_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERGUARD_BACKEND", "vllm")
    config = SteerguardConfig.load(audit_enabled=False)
    assert config.backend == "vllm"
    with Steerguard(config) as sg, pytest.raises(ConfigError) as info:
        sg.engine()
    message = str(info.value)
    assert "STEERGUARD_BACKEND" in message and "`backend`" in message
    assert "pip install vllm" in message and "setup_vllm.sh" in message
    assert sg.describe()["engines"] == []  # nothing half built


def test_an_unknown_backend_is_refused_by_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERGUARD_BACKEND", "tgi")
    with pytest.raises(ConfigError) as info:
        SteerguardConfig.load()
    assert "backend" in str(info.value) and "'hf'" in str(info.value)
