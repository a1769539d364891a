"""The composition root: parts built once, on first use, shared, and closed once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from steerguard.audit import AuditConfig, AuditLog
from steerguard.config import SteerguardConfig
from steerguard.policy.errors import PolicyError
from steerguard.resources import default_bundle_path, policies_dir
from steerguard.root import Steerguard
from steerguard.runtime.engine import SteeringEngine

from .models import tiny_model
from .policy.helpers import keyword_bundle
from .runtime.helpers import engine_with_vectors


@pytest.fixture(scope="module")
def tiny_engine() -> SteeringEngine:
    """With its vector loaded, so the root builds none from concepts."""
    return engine_with_vectors(tiny_model("llama"), "calm")


TINY_BUNDLE = keyword_bundle("tiny", {"calm": ("1-2", 0.2)}, ["order"], rule="orders",
                             max_vectors=2)


def _tiny(tmp_path: Path, **settings: object) -> SteerguardConfig:
    """A config for the 4-layer tiny model and a bundle within its layers."""
    bundle = _policy_folder(tmp_path, TINY_BUNDLE)
    return SteerguardConfig.load(model="tiny", bundle=bundle, **settings)


def _policy_folder(tmp_path: Path, bundle_text: str) -> Path:
    for name in ("concepts", "conditions"):
        shutil.copytree(policies_dir() / name, tmp_path / name)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bundle.yaml").write_text(bundle_text)
    return tmp_path / "b"


def test_parts_are_built_once_and_shared(tiny_engine: SteeringEngine, tmp_path: Path) -> None:
    with Steerguard(_tiny(tmp_path, audit_enabled=False), engine=tiny_engine) as sg:
        assert sg.engine() is tiny_engine and sg.engine("tiny") is tiny_engine
        assert sg.pipeline() is sg.pipeline()
        assert sg.audit is None  # auditing off in the config: no log, no records
        assert sg.describe()["bundle"] == "tiny@1"
    with pytest.raises(RuntimeError, match="closed"):
        sg.pipeline()


def test_a_bundle_naming_layers_the_model_lacks_is_refused(
    tiny_engine: SteeringEngine, tmp_path: Path
) -> None:
    """The shipped bundle steers layers up to 29; the tiny model has 4."""
    text = default_bundle_path().joinpath("bundle.yaml").read_text()
    bundle = _policy_folder(tmp_path, text)
    config = SteerguardConfig.load(model="tiny", bundle=bundle, audit_enabled=False)
    with Steerguard(config, engine=tiny_engine) as sg, pytest.raises(PolicyError) as info:
        sg.pipeline()
    assert "bundle.yaml" in str(info.value) and "4 layers" in str(info.value)


def test_a_given_audit_log_stays_its_owners(tiny_engine: SteeringEngine, tmp_path: Path) -> None:
    cfg = AuditConfig.load(redis_url="redis://127.0.0.1:6379/0", key_prefix="sgtest-root")
    log = AuditLog(cfg)
    try:
        with Steerguard(_tiny(tmp_path), engine=tiny_engine, audit=log) as sg:
            assert sg.audit is log
        log.check_available()  # still open: the root did not close what it was given
    finally:
        log.close()
        log.client.delete(*log.client.keys("sgtest-root:*") or ["sgtest-root:none"])


def test_the_default_root_is_shared_until_replaced(
    tiny_engine: SteeringEngine, tmp_path: Path
) -> None:
    mine = Steerguard(_tiny(tmp_path, audit_enabled=False), engine=tiny_engine)
    try:
        Steerguard.set_default(mine)
        assert Steerguard.default() is mine
        mine.close()
        fresh = Steerguard.default()  # a closed default is replaced
        assert fresh is not mine
        fresh.close()
    finally:
        Steerguard.set_default(None)
