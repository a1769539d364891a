from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from steerguard.audit import AuditConfig, AuditLog
from steerguard.cli.audit import app

from . import factories as f


def test_cli_query_stats_verify_export(config: AuditConfig,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with AuditLog(config) as log:
        for i in range(3):
            d = f.decision(i)
            log.record(d, f.result(d), user_id="alice")
        assert log.flush(5)
    monkeypatch.setenv("STEERGUARD_REDIS_URL", config.redis_url or "")
    monkeypatch.setenv("STEERGUARD_AUDIT_PREFIX", config.key_prefix)
    monkeypatch.setenv("STEERGUARD_HOME", str(config.home))
    run = CliRunner().invoke

    res = run(app, ["query", "--user", "alice", "--vector", "calm", "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.output)["records"]) == 3
    assert run(app, ["tail", "-n", "2"]).exit_code == 0
    assert "decisions" in run(app, ["stats"]).output
    res = run(app, ["verify"])
    assert res.exit_code == 0 and "9 records" in res.output
    csv_out = run(app, ["export", "--format", "csv"]).output.splitlines()
    assert csv_out[0].startswith("ts,kind,record_id") and len(csv_out) == 10
    assert len(run(app, ["export"]).output.splitlines()) == 9
    assert run(app, ["export", "--format", "xml"]).exit_code != 0
