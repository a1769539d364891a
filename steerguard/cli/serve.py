"""`steerguard serve`: the OpenAI-compatible server (steerguard.server) on uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from steerguard.cli.common import err_console, quiet_transformers, user_errors
from steerguard.errors import SteerguardError

log = logging.getLogger("steerguard.server")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """Bind once (port 0 takes any free port) and hand the socket to uvicorn, so the port
    reported is the port served."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SteerguardError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@user_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Interface (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000; 0: any free port, "
                                             "printed on start).")] = None,
    bundle: Annotated[Path | None, typer.Option(help="Policy bundle folder or file.")] = None,
    model: Annotated[str | None, typer.Option(help="Model spec (default: bundled).")] = None,
    backend: Annotated[
        str | None, typer.Option(help="hf (transformers, in process) or vllm (docs/vllm.md).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="steerguard.yaml to read.")] = None,
    keys_file: Annotated[Path | None, typer.Option(help="API keys file (hashed keys, "
                                                   "scopes).")] = None,
    scheduler: Annotated[str | None, typer.Option(help="batching (default) or threads.")] = None,
    hash_key: Annotated[str | None, typer.Option(help="Print the sha256 entry for a key "
                                                 "file and exit.")] = None,
) -> None:
    """Serve OpenAI-compatible chat completions, steered per request and audited."""
    from steerguard.server.keys import KeyRing
    from steerguard.server.keys import hash_key as digest

    if hash_key is not None:
        typer.echo(digest(hash_key))
        return
    import uvicorn
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    from steerguard.config import SteerguardConfig
    from steerguard.root import Steerguard
    from steerguard.server.app import create_app
    from steerguard.telemetry.setup import configure_telemetry

    overrides: dict[str, object] = {}
    if model:
        overrides["model"] = model
    if backend:
        overrides["backend"] = backend
    if bundle:
        overrides["bundle"] = bundle
    cfg = SteerguardConfig.load(config, **overrides)
    server_updates = {k: v for k, v in (("host", host), ("port", port),
                                        ("keys_file", keys_file), ("scheduler", scheduler))
                      if v is not None}
    if server_updates:
        from steerguard.config import ServerConfig

        try:
            settings = ServerConfig.model_validate(cfg.server.model_dump() | server_updates)
        except ValueError as exc:
            raise SteerguardError(f"serve options: {exc}") from None
        cfg = cfg.model_copy(update={"server": settings})
    settings = cfg.server
    keys = KeyRing.load(settings.keys_file)
    if not keys.enabled:
        if not _loopback(settings.host):
            raise SteerguardError(
                f"no API keys configured, so the server binds loopback only; --host "
                f"{settings.host} needs keys (server.keys_file, --keys-file or "
                f"STEERGUARD_API_KEYS)")
        err_console.print("[yellow]warning:[/] no API keys configured: running WITHOUT "
                          "authentication, loopback only, every caller has every scope",
                          soft_wrap=True)
    quiet_transformers()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    sock = _bind(settings.host, settings.port)
    configure_telemetry(console=False, extra_readers=(PrometheusMetricReader(),))
    bound_host, bound_port = sock.getsockname()[:2]
    with Steerguard(cfg) as root:
        routers = (root.oversight(keys).routers()
                   if settings.oversight and cfg.audit_enabled else ())
        app = create_app(root, keys=keys, settings=settings, routers=routers)
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        # One line tests and scripts read: the address actually bound.
        print(f"steerguard serving on http://{shown}:{bound_port}", flush=True)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                               timeout_graceful_shutdown=10))
        server.run(sockets=[sock])


def register(app: typer.Typer) -> None:
    app.command()(serve)
