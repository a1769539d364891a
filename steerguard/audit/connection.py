"""A redis-py client (hiredis parser) for the configured URL, or for the embedded server; a
RedisCluster client when `cluster` is set, with the setting's node URLs as startup nodes."""

from __future__ import annotations

import re
from typing import Any, TypeAlias

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from steerguard.audit.config import AuditConfig, node_urls, setting_name
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
    for field in ("redis_url", "reader_url"):
        _one_node_unless_cluster(config, field)
    field = "reader_url" if read_only and config.reader_url else "redis_url"
    url: str | None = getattr(config, field)
    if config.cluster:
        if not url:
            raise AuditConfigError(
                "cluster is set (STEERGUARD_REDIS_CLUSTER) but redis_url "
                "(STEERGUARD_REDIS_URL) is not: the embedded server is never a cluster; give "
                "the URLs of cluster nodes, or unset cluster"
            )
        return _cluster(config, field, url), None
    embedded = None
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


def _one_node_unless_cluster(config: AuditConfig, field: str) -> None:
    url: str | None = getattr(config, field)
    if url and not config.cluster and len(nodes := node_urls(url)) > 1:
        raise AuditConfigError(
            f"{setting_name(field)} names {len(nodes)} nodes ({_safe_all(url)}) but cluster "
            "(STEERGUARD_REDIS_CLUSTER) is not set: several URLs are the startup nodes of a "
            "Redis Cluster; a single server takes one URL"
        )


def _cluster(config: AuditConfig, field: str, url: str) -> RedisCluster:
    where = f"cluster is set (STEERGUARD_REDIS_CLUSTER) but {setting_name(field)} names"
    nodes = node_urls(url)
    options = [_node_options(where, node) for node in nodes]
    for node, opts in zip(nodes[1:], options[1:], strict=True):
        if differ := _differences(options[0], opts):
            raise AuditConfigError(
                f"{where} nodes that differ in {', '.join(differ)}: {_safe(nodes[0])} and "
                f"{_safe(node)}; every startup node is reached with the same credentials and "
                "TLS settings"
            )
    kwargs: dict[str, Any] = {"socket_timeout": config.socket_timeout_s,
                              "socket_connect_timeout": config.socket_timeout_s,
                              "health_check_interval": 0}
    # what the URLs say (credentials, TLS, query options) wins, as in from_url
    kwargs.update((k, v) for k, v in options[0].items() if k not in _ADDRESS)
    try:
        return RedisCluster(
            startup_nodes=[ClusterNode(o["host"], o.get("port", 6379)) for o in options],
            # Cluster-level retry (connection errors re-read the slot map; MOVED and ASK are
            # followed regardless): one, as above, so the writer's backoff stays in charge.
            retry=Retry(NoBackoff(), 1),
            **kwargs,
        )
    except RedisClusterException as exc:
        # RedisCluster reads the slot map in its constructor, from the first startup node
        # that answers, so no node answering, or none in cluster mode, fails here.
        # Not a RedisError: re-raise as one the callers already handle.
        if _caused_by(exc, redis.exceptions.NoPermissionError):
            # redis-py reports a refused CLUSTER SLOTS as "Cluster mode is not enabled"
            raise AuditConfigError(
                f"{where} {_safe_all(url)}: its user may not run CLUSTER SLOTS or COMMAND, "
                "which a cluster client needs (add +cluster|slots +command; see "
                "docs/audit.md, ACLs)"
            ) from exc
        msg = str(exc)
        if "Cluster mode is not enabled" in msg:
            raise AuditConfigError(f"{where} {_safe_all(url)}, which cannot be used: {msg}"
                                   ) from exc
        raise redis.ConnectionError(f"Redis Cluster at {_safe_all(url)}: {msg}") from exc


# What tells startup nodes apart; every other option of their URLs must be the same.
_ADDRESS = ("host", "port")

# Option names as a user knows them from the URL.
_OPTION_NAMES = {"username": "user", "password": "password",
                 "connection_class": "scheme (redis:// or rediss://)"}


def _node_options(where: str, node: str) -> dict[str, Any]:
    """redis-py's reading of one node URL, without its database (a cluster has only 0)."""
    try:
        options = parse_url(node)
    except ValueError as exc:
        raise AuditConfigError(
            f"{where} {_safe(node)}, which is not a node URL (redis://host:port or "
            f"rediss://..., several separated by commas): {exc}"
        ) from exc
    if "path" in options:
        raise AuditConfigError(
            f"{where} {_safe(node)}, which cannot be used: a cluster client connects to "
            "host:port (redis:// or rediss://), never through a Unix socket"
        )
    if "host" not in options:
        raise AuditConfigError(f"{where} {_safe(node)}, which names no host (redis://host:port)")
    if options.pop("db", 0) != 0:
        raise AuditConfigError(
            f"{where} {_safe(node)}, which cannot be used: a cluster has only db 0"
        )
    return options


def _differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = sorted((a.keys() | b.keys()) - set(_ADDRESS))
    return [_OPTION_NAMES.get(k, k) for k in keys if a.get(k) != b.get(k)]


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _safe(url: str) -> str:
    """The URL without its password (in the authority or the query), for error messages."""
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return url
    user = creds.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}" if user else f"{scheme}{sep}***@{host}"


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*")


def _safe_all(url: str) -> str:
    """Each node URL of a setting without its password."""
    return ", ".join(_safe(node) for node in node_urls(url))
