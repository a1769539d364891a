"""`steerguard serve` refuses what it cannot run safely, in one line and exit code 2."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from steerguard.cli.app import app
from steerguard.server.keys import hash_key

runner = CliRunner()


def test_no_keys_means_loopback_only(monkeypatch) -> None:
    monkeypatch.delenv("STEERGUARD_API_KEYS", raising=False)
    monkeypatch.delenv("STEERGUARD_API_KEYS_FILE", raising=False)
    out = runner.invoke(app, ["serve", "--host", "0.0.0.0"])
    assert out.exit_code == 2
    assert "loopback only" in out.output and "--host 0.0.0.0 needs keys" in out.output
    assert "Traceback" not in out.output


def test_bad_keys_and_config_are_named(tmp_path) -> None:
    out = runner.invoke(app, ["serve", "--keys-file", str(tmp_path / "absent.yaml")])
    assert out.exit_code == 2 and "cannot read keys file" in out.output
    config = tmp_path / "steerguard.yaml"
    config.write_text("server:\n  max_batch: 0\n  colour: blue\n")
    out = runner.invoke(app, ["serve", "--config", str(config)])
    assert out.exit_code == 2
    assert "server.max_batch" in out.output and "server.colour" in out.output


def test_a_port_in_use_is_a_clear_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        out = runner.invoke(app, ["serve", "--port", str(port)])
        assert out.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in out.output
    finally:
        taken.close()


def test_hash_key_prints_the_file_entry() -> None:
    out = runner.invoke(app, ["serve", "--hash-key", "sk-1"])
    assert out.exit_code == 0 and out.output.strip() == hash_key("sk-1")
