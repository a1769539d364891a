from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from steerguard.audit import AuditConfig, AuditLog
from steerguard.cli.audit import app

from . import factories as f


def _logged(config: AuditConfig, monkeypatch: pytest.MonkeyPatch, user: str, requests: int
            ) -> Callable[..., Result]:
    """Write `requests` requests of `user`, point the CLI at the log; the CLI's runner."""
    with AuditLog(config) as log:
        for i in range(requests):
            d = f.decision(i)
            log.record(d, f.result(d), user_id=user)
        assert log.flush(5)
    monkeypatch.setenv("STEERGUARD_REDIS_URL", config.redis_url or "")
    monkeypatch.setenv("STEERGUARD_AUDIT_PREFIX", config.key_prefix)
    monkeypatch.setenv("STEERGUARD_HOME", str(config.home))
    return CliRunner().invoke


def test_cli_query_stats_verify_export(config: AuditConfig,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    run = _logged(config, monkeypatch, "alice", 3)

    res = run(app, ["query", "--user", "alice", "--vector", "calm", "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)["records"]) == 3
    assert run(app, ["tail", "-n", "2"]).exit_code == 0
    assert "decisions" in run(app, ["stats"]).output
    res = run(app, ["verify"])
    assert res.exit_code == 0 and "9 records" in res.output
    csv_out = run(app, ["export", "--format", "csv"]).output.splitlines()
    assert csv_out[0].startswith("ts,kind,record_id") and len(csv_out) == 10
    assert len(run(app, ["export"]).output.splitlines()) == 9
    assert run(app, ["export", "--format", "xml"]).exit_code != 0


def test_cli_export_then_verify_the_file(config: AuditConfig, monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    run = _logged(config, monkeypatch, "bob", 2)
    out = tmp_path / "audit.jsonl"
    assert run(app, ["export", "-o", str(out)]).exit_code == 0
    res = run(app, ["verify", "--file", str(out)])
    assert res.exit_code == 0 and "6 records in 1 chains" in res.output, res.output
    lines = out.read_bytes().splitlines()
    del lines[2]
    out.write_bytes(b"\n".join(lines) + b"\n")
    res = run(app, ["verify", "--file", str(out)])
    assert res.exit_code == 1 and "deleted" in res.output and "audit.jsonl:3" in res.output
    res = run(app, ["verify", "--file", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 2 and "no such file" in res.output
    res = run(app, ["export", "-o", str(tmp_path / "no-dir" / "x.jsonl")])
    assert res.exit_code == 2 and "No such file or directory" in res.output
