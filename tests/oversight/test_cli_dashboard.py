"""`steerguard audit dashboard`: the oversight routers on a server process of their own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from steerguard.audit import AuditConfig
from tests.oversight.conftest import CHAT_KEY, HMAC_KEY, READER_KEY, URL

pytestmark = pytest.mark.redis
ROOT = Path(__file__).parents[2]


def test_dashboard_command_serves_the_api_with_the_server_keys(
        written: AuditConfig, tmp_path: Path) -> None:
    cfg = tmp_path / "steerguard.yaml"
    cfg.write_text(yaml.safe_dump({"audit": {
        "redis_url": URL, "key_prefix": written.key_prefix, "user_hmac_key": HMAC_KEY,
        "home": str(tmp_path / "home")}}))
    env = {**os.environ, "STEERGUARD_API_KEYS":
           f"auditor:{READER_KEY}:audit:read,agent:{CHAT_KEY}:chat"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from steerguard.cli.app import main; main()", "audit",
         "dashboard", "--port", "0", "--config", str(cfg)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "steerguard oversight on http://" in line, proc.stderr.read() if proc.stderr else ""
        base = line.split()[-1].removesuffix("/dashboard/")
        with httpx.Client(base_url=base, timeout=30) as c:
            deadline = time.monotonic() + 30
            while c.get("/healthz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            ok = c.get("/v1/audit/records", params={"user": "bob"},
                       headers={"Authorization": f"Bearer {READER_KEY}"})
            assert ok.status_code == 200 and len(ok.json()["records"]) == 9
            denied = c.get("/v1/audit/records", headers={"Authorization": f"Bearer {CHAT_KEY}"})
            assert denied.status_code == 403
            assert denied.headers["content-type"] == "application/problem+json"
            assert c.get("/v1/audit/records").status_code == 401
            assert c.get("/dashboard/").status_code == 303  # sign in first
    finally:
        proc.terminate()
        proc.wait(30)


def test_dashboard_command_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STEERGUARD_API_KEYS"}
    r = subprocess.run(
        [sys.executable, "-c", "from steerguard.cli.app import main; main()", "audit",
         "dashboard", "--host", "0.0.0.0", "--port", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "loopback only" in r.stderr and "Traceback" not in r.stderr
