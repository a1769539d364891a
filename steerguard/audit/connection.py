"""A redis-py client (hiredis parser) for the configured URL, or for the embedded server."""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from steerguard.audit.config import AuditConfig
from steerguard.audit.embedded import EmbeddedServer


def connect(
    config: AuditConfig, *, read_only: bool = False
) -> tuple[redis.Redis, EmbeddedServer | None]:
    """Credentials and TLS come through the URL (redis://user:pass@host, rediss://...).
    `read_only` connects with `reader_url` when one is configured."""
    embedded = None
    url = (config.reader_url or config.redis_url) if read_only else config.redis_url
    if not url:
        embedded = EmbeddedServer(config.embedded_dir)
        url = embedded.ensure()
    client = redis.Redis.from_url(
        url,
        socket_timeout=config.socket_timeout_s,
        socket_connect_timeout=config.socket_timeout_s,
        health_check_interval=0,
        # One quick retry covers a stale pooled connection; the writer owns real backoff
        # (redis-py's default of 10 retries would stall the writer for seconds per call).
        retry=Retry(NoBackoff(), 1),
    )
    return client, embedded
