"""SDK setup for applications: exporter choice from OTEL_* variables, console and OTLP/HTTP.

configure_telemetry sets process-global providers, so it runs in a child process here."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from steerguard.telemetry.setup import exporter_names

SCRIPT = """
from steerguard.telemetry import get_telemetry
from steerguard.telemetry.setup import configure_telemetry
setup = configure_telemetry()
assert configure_telemetry() is setup  # once per process
with get_telemetry().model_call("m"):
    pass
setup.shutdown()
print(setup.traces_exporters, setup.metrics_exporters)
"""


def run_child(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([sys.executable, "-c", SCRIPT], env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=True)


@pytest.mark.parametrize(("env", "console", "expected"), [
    ({}, True, ("console",)),
    ({}, False, ()),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True, ("otlp",)),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True, ("otlp",)),
    ({"OTEL_TRACES_EXPORTER": "console,otlp"}, False, ("console", "otlp")),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, True, ()),
])
def test_exporter_choice(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], console: bool,
                         expected: tuple[str, ...]) -> None:
    for var in [v for v in os.environ if v.startswith("OTEL_")]:
        monkeypatch.delenv(var)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert exporter_names("traces", console) == expected


def test_console_by_default_on_stderr() -> None:
    done = run_child()
    assert '"name": "chat m"' in done.stderr
    assert "chat m" not in done.stdout  # stdout stays the command's own
    assert "('console',) ('console',)" in done.stdout


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_otlp_http_when_an_endpoint_is_set() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        run_child(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
                  OTEL_SERVICE_NAME="sg-test")
    finally:
        server.shutdown()
        server.server_close()
    paths = {path for path, _ in _Collector.received}
    assert {"/v1/traces", "/v1/metrics"} <= paths
    traces = b"".join(body for path, body in _Collector.received if path == "/v1/traces")
    assert b"chat m" in traces and b"sg-test" in traces
