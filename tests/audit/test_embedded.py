from __future__ import annotations

from pathlib import Path

import pytest

from steerguard.audit import AuditConfig, AuditLog, AuditStore

from . import factories as f


def test_embedded_valkey_with_aof_survives_a_restart(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STEERGUARD_REDIS_URL", raising=False)
    cfg = AuditConfig(home=tmp_path)
    with AuditLog(cfg) as log:
        ids = log.record(f.decision(1), None, user_id="alice")
        assert log.flush(5)
    assert (cfg.embedded_dir / "appendonlydir").exists()
    store = AuditStore.from_config(cfg)  # starts the server again from its AOF
    try:
        assert [r.record_id for r in store.query(user="alice").records] == ids
        assert store.verify().ok
    finally:
        store.close()
