"""Fixtures for the LangChain tests: the session's real engine (tests/conftest.py), the
shipped policy bundle, and an audit log in the shared Redis under a key prefix of our own."""

from __future__ import annotations

from typing import Any

import pytest

from steerguard.resources import default_bundle_path
from tests.conftest import audit_log_fixture

lc_audit = audit_log_fixture("lc_audit", "sglc", "session")


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
