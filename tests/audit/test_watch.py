"""The watcher: walks only new records, checkpoints heads and stream counters after a clean
pass, and catches what a writer's credentials could do in between."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from steerguard.audit import AuditConfig, AuditLog, AuditStore
from steerguard.audit import log as audit_log
from steerguard.audit.chain import canonical, record_hash
from steerguard.audit.watch import LogWatcher
from steerguard.cli.app import app

from . import factories as f


def _write(config: AuditConfig, start: int, n: int) -> None:
    with AuditLog(config) as log:
        for i in range(start, start + n):
            d = f.decision(i)
            log.record(d, f.result(d), user_id="alice")
        assert log.flush(5)


def _watcher(config: AuditConfig, tmp_path: Path) -> tuple[AuditStore, LogWatcher, Path]:
    store = AuditStore(redis.Redis.from_url(config.redis_url), config)
    path = tmp_path / "watch-checkpoints.jsonl"
    return store, LogWatcher(store.client, store.keys, path), path


def test_passes_walk_only_new_records_and_checkpoint(config: AuditConfig,
                                                     tmp_path: Path) -> None:
    _write(config, 0, 4)
    store, watcher, path = _watcher(config, tmp_path)
    first = watcher.step()
    assert first.ok and first.full and first.new_records == 12 and first.checkpoint_written
    _write(config, 4, 2)  # a second writer process: a second chain
    second = watcher.step()
    assert second.ok and not second.full and second.new_records == 6 and second.chains == 2
    assert watcher.step().new_records == 0
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    day = store.days()[0]
    assert lines[-1]["streams"][day] == {"entries_added": 18, "length": 18}
    assert sorted(h["seq"] for h in lines[-1]["chains"].values()) == [5, 11]
    assert store.verify(path).ok  # the full verify accepts the watcher's checkpoints


def test_maxlen_zero_and_forged_records_are_caught(config: AuditConfig, tmp_path: Path) -> None:
    _write(config, 0, 2)
    store, watcher, _ = _watcher(config, tmp_path)
    assert watcher.step().ok
    stream = store.keys.stream(store.days()[0])
    # A forged record appended to the chain with a wrong link.
    body = json.loads(store.client.xrange(stream)[-1][1][b"r"])
    body.update(seq=body["seq"] + 1, prev="0" * 64, strength=0.0)
    payload = canonical(body)
    store.client.xadd(stream, {"r": payload, "h": record_hash(payload)})
    bad = watcher.step()
    assert not bad.ok and bad.problems[0].kind == "modified" and not bad.checkpoint_written
    assert not watcher.step().ok  # a failed pass is walked again: the problem stays visible
    # What the writer's own credentials allow: XADD ... MAXLEN 0 empties the stream.
    store.client.xadd(stream, {"r": b"x", "h": b"x"}, maxlen=0, approximate=False)
    cut = watcher.step()
    assert any(p.kind == "truncated" for p in cut.problems)


def test_watch_cli_once_trims_then_verifies(config: AuditConfig, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    old = time.time() - 40 * 86_400
    with monkeypatch.context() as m:  # records stamped 40 days ago
        m.setattr(audit_log.time, "time", lambda: old)
        _write(config, 0, 2)
    _write(config, 2, 2)
    cfg_file = tmp_path / "audit.yml"
    cfg_file.write_text(f"audit:\n  redis_url: {config.redis_url}\n  key_prefix: "
                        f"{config.key_prefix}\n  home: {tmp_path}\n  retention_days: 30\n")
    ck = tmp_path / "ck.jsonl"
    runner = CliRunner()
    args = ["audit", "watch", "--once", "--trim", "--checkpoint", str(ck), "--config",
            str(cfg_file)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "ok" in res.output and "trimmed" in res.output
    assert len(AuditStore(redis.Redis.from_url(config.redis_url), config).days()) == 1
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "ok" in res.output, res.output
