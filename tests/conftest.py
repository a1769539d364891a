"""Shared fixtures: the real bundled model is loaded once per test session; the shared Redis,
with key prefixes of a test's own."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import redis

    from steerguard.audit.log import AuditLog

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[redis.Redis]:
    """A client of the shared Redis at 127.0.0.1:6379; the test is skipped without one."""
    import redis

    client = redis.Redis.from_url(SHARED_REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    yield client
    client.close()


def drop_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete the keys under `prefix` alone (never FLUSH: the Redis is shared)."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.unlink(*keys)


@contextlib.contextmanager
def own_prefix(client: redis.Redis, tag: str) -> Iterator[str]:
    """A key prefix of our own (`tag` and random hex), its keys deleted afterwards."""
    prefix = tag + uuid.uuid4().hex[:10]
    try:
        yield prefix
    finally:
        drop_prefix(client, prefix)


def audit_log_fixture(name: str, tag: str, scope: str = "function") -> Any:
    """A fixture `name` of that scope: a real AuditLog writing to the shared Redis under a
    prefix of its own (`own_prefix`), closed and its keys deleted afterwards."""

    @pytest.fixture(name=name, scope=scope)  # type: ignore[call-overload]
    def audit_log(shared_redis: redis.Redis, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[AuditLog]:
        from steerguard.audit.config import AuditConfig
        from steerguard.audit.log import AuditLog

        with own_prefix(shared_redis, tag) as prefix:
            log = AuditLog(AuditConfig(redis_url=SHARED_REDIS_URL, key_prefix=prefix,
                                       home=tmp_path_factory.mktemp("audit"),
                                       spill_fsync=False))
            try:
                yield log
            finally:
                log.close()

    return audit_log


@pytest.fixture
def prefix(shared_redis: redis.Redis) -> Iterator[str]:
    """A key prefix of this test's own in the shared Redis."""
    with own_prefix(shared_redis, "sgtest") as p:
        yield p


@pytest.fixture(scope="session")
def real_loaded():
    from steerguard.runtime.loading import load_model

    return load_model()


@pytest.fixture(scope="session")
def real_engine(real_loaded):
    """The bundled SmolLM2 with the shipped concept vectors."""
    from steerguard.resources import concepts_dir
    from steerguard.runtime.engine import SteeringEngine
    from steerguard.vectors.library import VectorLibrary

    engine = SteeringEngine(real_loaded)
    VectorLibrary(real_loaded.fingerprint).load_into(engine, concepts_dir())
    return engine
