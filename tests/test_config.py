"""One configuration: defaults, then a file, then the environment, then arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerguard.config import ConfigError, SteerguardConfig
from steerguard.home import steerguard_home
from steerguard.runtime.bundled import BUNDLED


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STEERGUARD_CONFIG", "STEERGUARD_MODEL", "STEERGUARD_BACKEND",
                 "STEERGUARD_BUNDLE", "STEERGUARD_CONCEPTS"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_run_the_bundled_model_on_transformers() -> None:
    config = SteerguardConfig.load()
    assert (config.model, config.backend, config.bundle) == (BUNDLED, "hf", None)
    assert config.audit_enabled


def test_each_later_source_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "steerguard.yaml"
    file.write_text("model: from-file\nbundle: b1\nwatch_bundle_s: 2\n"
                    "audit:\n  key_prefix: fromfile\n")
    config = SteerguardConfig.load(file)
    assert (config.model, config.bundle, config.watch_bundle_s) == ("from-file", Path("b1"), 2)
    assert config.audit.key_prefix == "fromfile"  # the audit section is read from the same file

    monkeypatch.setenv("STEERGUARD_MODEL", "from-env")
    monkeypatch.setenv("STEERGUARD_CONFIG", str(file))
    config = SteerguardConfig.load()  # the file named by the environment
    assert (config.model, config.bundle) == ("from-env", Path("b1"))
    assert SteerguardConfig.load(model="from-arg").model == "from-arg"


def test_a_wrong_setting_is_named_with_its_file(tmp_path: Path) -> None:
    file = tmp_path / "steerguard.yaml"
    file.write_text("modle: x\n")
    with pytest.raises(ConfigError, match=r"steerguard.yaml: unknown setting\(s\) modle; known:"):
        SteerguardConfig.load(file)
    file.write_text("backend: tgi\n")
    with pytest.raises(ConfigError, match=r"steerguard.yaml: backend: Input should be 'hf' or"):
        SteerguardConfig.load(file)
    with pytest.raises(ConfigError, match="watch_bundle_s"):
        SteerguardConfig.load(watch_bundle_s=0)


def test_a_broken_file_is_refused_with_its_line(tmp_path: Path) -> None:
    file = tmp_path / "steerguard.yaml"
    file.write_text("model: a\nmodel: b\n")  # PyYAML alone keeps the last one silently
    with pytest.raises(ConfigError, match=r"steerguard.yaml:2"):
        SteerguardConfig.load(file)
    file.write_bytes(b"model: \xff\n")
    with pytest.raises(ConfigError, match=r"steerguard\.yaml"):
        SteerguardConfig.load(file)
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        SteerguardConfig.load(tmp_path / "missing.yaml")


def test_home_expands_the_tilde(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEERGUARD_HOME", "~/sg-home")
    assert steerguard_home() == Path.home() / "sg-home"
    monkeypatch.delenv("STEERGUARD_HOME")
    assert steerguard_home() == Path.home() / ".cache" / "steerguard"
