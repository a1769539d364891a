"""`steerguard demo --json` on the real model, auditing into the test Redis under its own prefix."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from typer.testing import CliRunner

from steerguard.cli.app import app

URL = "redis://127.0.0.1:6379/0"


@pytest.fixture()
def audit_prefix(monkeypatch, tmp_path):
    client = redis.Redis.from_url(URL)
    prefix = "sgdemo" + uuid.uuid4().hex[:8]
    monkeypatch.setenv("STEERGUARD_REDIS_URL", URL)
    monkeypatch.setenv("STEERGUARD_AUDIT_PREFIX", prefix)
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.unlink(*keys)
    client.close()


@pytest.mark.real_model
@pytest.mark.redis
def test_demo_runs_decides_audits_and_verifies(real_engine, audit_prefix) -> None:
    result = CliRunner().invoke(app, ["demo", "--json", "--max-tokens", "8"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    turns, audit = payload["turns"], payload["audit"]
    assert len(turns) == 6
    by_user = {t["user"]: t for t in turns if t["turn"] == 1}
    assert "minor-safety" in by_user["alex"]["rules"]
    assert "distress-empathy" in by_user["sam"]["rules"]
    assert "formal-preference" in by_user["dana"]["rules"]
    applied = sum(len(t["plan"]) for t in turns)
    assert audit["decisions"] == 6
    assert sum(audit["interventions_by_vector"].values()) == applied
    assert audit["chain_verified"] is True
    assert all(t["audit_ids"] for t in turns)
