"""PolicyStore: atomic reload, last good bundle kept, reasons reported, watch."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from steerguard.policy.errors import PolicyError
from steerguard.policy.store import PolicyStore

from .helpers import bundle_yaml

V1 = bundle_yaml("- id: a\n  when: {keywords: {words: [sad]}}\n  apply: [empathy]\n")
V2 = V1.replace('revision: "1"', 'revision: "2"').replace("[sad]", "[sad, blue]")
BROKEN = V2.replace("apply: [empathy]", "apply: [empathi]")


def test_reload_keeps_last_good_and_reports_why(tmp_path: Path) -> None:
    f = tmp_path / "bundle.yaml"
    f.write_text(V1)
    store = PolicyStore(tmp_path)
    assert store.engine.ref.revision == "1"

    f.write_text(BROKEN)
    result = store.reload()
    assert not result.ok and not result.changed and result.revision == "1"
    assert result.error is not None and "unknown vector 'empathi'" in str(result.error)
    assert store.last_error is result.error
    assert store.engine.ref.revision == "1"

    f.write_text(V2)
    result = store.reload()
    assert result.ok and result.changed and store.engine.ref.revision == "2"
    assert store.last_error is None
    assert store.reload().changed is False  # same content, same engine


def test_a_broken_first_load_raises(tmp_path: Path) -> None:
    (tmp_path / "bundle.yaml").write_text(BROKEN)
    with pytest.raises(PolicyError):
        PolicyStore(tmp_path)


def test_watch_reloads_on_change(tmp_path: Path) -> None:
    f = tmp_path / "bundle.yaml"
    f.write_text(V1)
    with PolicyStore(f) as store:
        store.watch(interval=0.02)
        f.write_text(V2)
        deadline = time.monotonic() + 3
        while store.engine.ref.revision != "2" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.engine.ref.revision == "2"
        engine_v2 = store.engine
        f.write_text(BROKEN)
        deadline = time.monotonic() + 3
        while store.last_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.last_error is not None and store.engine is engine_v2
