"""`steerguard serve` started as a real subprocess on a port the OS picks (the server binds
port 0 and prints the address it got), with API keys, a real Redis audit log under a key
prefix of this session's, and the bundled model."""

from __future__ import annotations

import contextlib
import os
import signal
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

from tests.conftest import SHARED_REDIS_URL, own_prefix

REDIS_URL = SHARED_REDIS_URL
ROOT = Path(__file__).resolve().parents[2]
KEYS = {"agent": "sk-agent-" + uuid.uuid4().hex, "author": "sk-author-" + uuid.uuid4().hex}
MODEL = "smollm2-135m"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    prefix: str
    log: Path
    startup: list[int]  # /healthz statuses seen while the model loaded

    @property
    def api(self) -> str:
        return f"{self.url}/v1"

    def headers(self, who: str = "agent") -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS[who]}"}


@pytest.fixture(scope="session")
def audit_prefix(shared_redis: redis.Redis) -> Iterator[str]:
    with own_prefix(shared_redis, "sgsrv") as prefix:
        yield prefix


def start_server(tmp: Path, prefix: str, server: dict[str, object], name: str,
                 env: dict[str, str] | None = None) -> Server:
    config = tmp / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"server": server}))
    full_env = {
        **os.environ,
        "STEERGUARD_REDIS_URL": REDIS_URL,
        "STEERGUARD_AUDIT_PREFIX": prefix,
        "STEERGUARD_AUDIT_SPILL_PATH": str(tmp / f"{name}-spill.jsonl"),
        "STEERGUARD_AUDIT_CHECKPOINT_PATH": str(tmp / f"{name}-checkpoint.json"),
        "STEERGUARD_API_KEYS": f"agent:{KEYS['agent']}:chat,"
                               f"author:{KEYS['author']}:chat+steer+audit:read",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    log = tmp / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-c", "from steerguard.cli.app import main; main()", "serve",
         "--port", "0", "--config", str(config)],
        cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
        start_new_session=True,  # its own group: a kill reaches the engine processes it forks
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # "steerguard serving on http://127.0.0.1:PORT"
    if "serving on" not in line:
        _kill_group(process)
        pytest.fail(f"server did not start: {line!r}\n{log.read_text()[-3000:]}")
    url = line.strip().rsplit(" ", 1)[-1]
    deadline = time.monotonic() + 300
    startup: list[int] = []
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _kill_group(process)
            pytest.fail(f"server exited: {log.read_text()[-3000:]}")
        try:
            health = httpx.get(f"{url}/healthz", timeout=5)
            startup.append(health.status_code)
            if health.status_code == 200:
                break
            assert health.status_code == 503
            assert health.headers["content-type"].startswith("application/problem+json")
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        _kill_group(process)
        pytest.fail("server never became healthy")
    return Server(url, process, prefix, log, startup)


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def stop_server(server: Server) -> None:
    server.process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(30)
    _kill_group(server.process)  # also whatever it forked and did not stop


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
