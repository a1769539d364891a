"""Fixtures for the LangChain tests: the session's real engine (tests/conftest.py), the
shipped policy bundle, and an audit log in the shared Redis under a key prefix of our own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from steerguard.resources import default_bundle_path

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def lc_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    yield client
    client.close()


@pytest.fixture(scope="session")
def lc_audit(lc_redis: redis.Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real AuditLog; only this session's keys are deleted afterwards (never FLUSH)."""
    from steerguard.audit.config import AuditConfig
    from steerguard.audit.log import AuditLog

    prefix = "sglc" + uuid.uuid4().hex[:10]
    config = AuditConfig(redis_url=REDIS_URL, key_prefix=prefix,
                         home=tmp_path_factory.mktemp("audit"), spill_fsync=False)
    log = AuditLog(config)
    yield log
    log.close()
    keys = list(lc_redis.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        lc_redis.unlink(*keys)


@pytest.fixture(scope="session")
def lc_store(lc_audit: Any) -> Any:
    from steerguard.audit.store import AuditStore

    return AuditStore(lc_audit.client, lc_audit.config)


@pytest.fixture(scope="session")
def support_policy() -> Any:
    from steerguard.policy.store import PolicyStore

    return PolicyStore(default_bundle_path())


@pytest.fixture(scope="session")
def lc_pipeline(real_engine: Any, support_policy: Any, lc_audit: Any) -> Any:
    from steerguard.pipeline import SteeringPipeline

    return SteeringPipeline(real_engine, lambda: support_policy.engine, lc_audit)


@pytest.fixture
def chat(real_engine: Any, support_policy: Any, lc_audit: Any) -> Any:
    from steerguard.langchain import SteeredChatModel

    return SteeredChatModel(engine=real_engine, policy=support_policy, audit=lc_audit,
                            max_tokens=8)
