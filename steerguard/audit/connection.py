"""A redis-py client (hiredis parser) for the configured URL, or for the embedded server; a
RedisCluster client when `cluster` is set."""

from __future__ import annotations

from typing import TypeAlias

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from steerguard.audit.config import AuditConfig
from steerguard.audit.embedded import EmbeddedServer
from steerguard.audit.errors import AuditConfigError

# What the log, the store and the verifier accept: every call they make works on both (a
# day's keys share one hash tag, so no multi-key command crosses a slot).
Client: TypeAlias = redis.Redis | RedisCluster


def pool_for(client: Client, key: str) -> redis.ConnectionPool:
    """The connection pool of the server that holds `key`: the only one on a single server,
    the node that serves its slot on a cluster (as far as the client's slot map knows)."""
    if isinstance(client, redis.Redis):
        return client.connection_pool
    return client.get_redis_connection(client.get_node_from_key(key)).connection_pool


def connect(
    config: AuditConfig, *, read_only: bool = False
) -> tuple[Client, EmbeddedServer | None]:
    """Credentials and TLS come through the URL (redis://user:pass@host, rediss://...).
    `read_only` connects with `reader_url` when one is configured."""
    embedded = None
    url = (config.reader_url or config.redis_url) if read_only else config.redis_url
    if config.cluster:
        if not url:
            raise AuditConfigError(
                "cluster is set (STEERGUARD_REDIS_CLUSTER) but redis_url "
                "(STEERGUARD_REDIS_URL) is not: the embedded server is never a cluster; give "
                "the URL of a cluster node, or unset cluster"
            )
        return _cluster(config, url), None
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


def _cluster(config: AuditConfig, url: str) -> RedisCluster:
    try:
        return RedisCluster.from_url(
            url,
            socket_timeout=config.socket_timeout_s,
            socket_connect_timeout=config.socket_timeout_s,
            health_check_interval=0,
            # Cluster-level retry (connection errors re-read the slot map; MOVED and ASK are
            # followed regardless): one, as above, so the writer's backoff stays in charge.
            retry=Retry(NoBackoff(), 1),
        )
    except RedisClusterException as exc:
        # RedisCluster reads the slot map in its constructor, so a node that is down, not in
        # cluster mode, or a URL it cannot use (unix socket, db other than 0) fails here.
        # Not a RedisError: re-raise as one the callers already handle.
        where = f"cluster is set (STEERGUARD_REDIS_CLUSTER) but {_safe(url)}"
        if _caused_by(exc, redis.exceptions.NoPermissionError):
            # redis-py reports a refused CLUSTER SLOTS as "Cluster mode is not enabled"
            raise AuditConfigError(
                f"{where}: its user may not run CLUSTER SLOTS or COMMAND, which a cluster "
                "client needs (add +cluster|slots +command; see docs/audit.md, ACLs)"
            ) from exc
        msg = str(exc)
        if any(s in msg for s in _NOT_USABLE):
            raise AuditConfigError(f"{where} cannot be used: {msg}") from exc
        raise redis.ConnectionError(f"Redis Cluster at {_safe(url)}: {msg}") from exc


# redis-py's words for URLs and servers a cluster client cannot use.
_NOT_USABLE = ("can only be 0 in cluster mode", "Unix Domain Socket",
               "Cluster mode is not enabled")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _safe(url: str) -> str:
    """The URL without its password, for error messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user = creds.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}" if user else f"{scheme}{sep}***@{host}"
