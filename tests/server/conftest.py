"""`steerguard serve` started as a real subprocess on a port the OS picks (the server binds
port 0 and prints the address it got), with API keys, a real Redis audit log under a key
prefix of this session's, and the bundled model."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
import yaml

REDIS_URL = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parents[2]
KEYS = {"agent": "sk-agent-" + uuid.uuid4().hex, "author": "sk-author-" + uuid.uuid4().hex}
MODEL = "smollm2-135m"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    prefix: str
    log: Path

    @property
    def api(self) -> str:
        return f"{self.url}/v1"

    def headers(self, who: str = "agent") -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS[who]}"}


@pytest.fixture(scope="session")
def audit_prefix() -> Iterator[str]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = "sgsrv" + uuid.uuid4().hex[:10]
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.unlink(*keys)
    client.close()


def start_server(tmp: Path, prefix: str, server: dict[str, object], name: str) -> Server:
    config = tmp / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"server": server}))
    env = {
        **os.environ,
        "STEERGUARD_REDIS_URL": REDIS_URL,
        "STEERGUARD_AUDIT_PREFIX": prefix,
        "STEERGUARD_AUDIT_SPILL_PATH": str(tmp / f"{name}-spill.jsonl"),
        "STEERGUARD_AUDIT_CHECKPOINT_PATH": str(tmp / f"{name}-checkpoint.json"),
        "STEERGUARD_API_KEYS": f"agent:{KEYS['agent']}:chat,"
                               f"author:{KEYS['author']}:chat+steer+audit:read",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PYTHONPATH": str(ROOT),
    }
    log = tmp / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-c", "from steerguard.cli.app import main; main()", "serve",
         "--port", "0", "--config", str(config)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # "steerguard serving on http://127.0.0.1:PORT"
    if "serving on" not in line:
        process.kill()
        pytest.fail(f"server did not start: {line!r}\n{log.read_text()[-3000:]}")
    url = line.strip().rsplit(" ", 1)[-1]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("server never became healthy")
    return Server(url, process, prefix, log)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(30)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, audit_prefix: str) -> Iterator[Server]:
    """The server as deployed: batching, 16 rows, short constrained strings."""
    tmp = tmp_path_factory.mktemp("serve")
    s = start_server(tmp, audit_prefix, {"max_batch": 16, "max_string_chars": 16,
                                         "max_tokens": 256}, "main")
    yield s
    stop_server(s)


@pytest.fixture(scope="session")
def small_server(tmp_path_factory: pytest.TempPathFactory, audit_prefix: str
                 ) -> Iterator[Server]:
    """One row, no queue, tiny limits: back-pressure, body limits and fuzzing."""
    tmp = tmp_path_factory.mktemp("serve-small")
    s = start_server(tmp, audit_prefix, {"max_batch": 1, "max_queue": 0, "max_tokens": 64,
                                         "default_max_tokens": 2, "max_body_bytes": 4096},
                     "small")
    yield s
    stop_server(s)


@pytest.fixture(scope="session")
def store(audit_prefix: str):
    from steerguard.audit.config import AuditConfig
    from steerguard.audit.store import AuditStore

    client = redis.Redis.from_url(REDIS_URL)
    yield AuditStore(client, AuditConfig(redis_url=REDIS_URL, key_prefix=audit_prefix))
    client.close()


def wait_for(predicate, timeout: float = 30.0, every: float = 0.25):
    """Poll until `predicate()` is truthy (audit records reach Redis asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)
