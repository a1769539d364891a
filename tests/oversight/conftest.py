"""Oversight over a real Redis: records written through the real AuditLog writer under a key
prefix of each test's own (`prefix`, tests/conftest.py: only its keys are deleted afterwards)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from steerguard.audit import AuditConfig, AuditLog, AuditStore
from steerguard.oversight import Oversight
from steerguard.oversight.app import create_app
from steerguard.server.keys import KeyEntry, KeyRing, hash_key
from tests.audit import factories as f
from tests.conftest import SHARED_REDIS_URL

URL = SHARED_REDIS_URL
HMAC_KEY = "oversight-test-hmac-key-0123456789abcdef"
READER_KEY = "sk-reader-" + "r" * 24
CHAT_KEY = "sk-chat-only-" + "c" * 24
ADMIN_KEY = "sk-admin-" + "a" * 24


@pytest.fixture
def config(prefix: str, tmp_path: Path) -> AuditConfig:
    return AuditConfig(redis_url=URL, key_prefix=prefix, home=tmp_path, spill_fsync=False,
                       user_hmac_key=HMAC_KEY, store_text=True)


def write_records(config: AuditConfig, n: int = 6) -> None:
    """n requests: users alice (even) and bob (odd), sessions s-a and s-b, two
    interventions each; request 0 holds hostile markup in its quoted text."""
    with AuditLog(config) as log:
        for i in range(n):
            quote = "<script>window.pwned=1</script><b>bold</b>" if i == 0 else f"quote {i}"
            d = f.decision(i, quote=quote, rule="minor-calm" if i % 2 == 0 else "vip-formal")
            log.record(d, f.result(d), user_id="alice" if i % 2 == 0 else "bob",
                       session_id="s-a" if i < n // 2 else "s-b")
        assert log.flush(10)


@pytest.fixture
def written(config: AuditConfig) -> AuditConfig:
    write_records(config)
    return config


def keys() -> KeyRing:
    return KeyRing([KeyEntry(name="auditor", sha256=hash_key(READER_KEY), scopes=("audit:read",)),
                    KeyEntry(name="chatbot", sha256=hash_key(CHAT_KEY), scopes=("chat",)),
                    KeyEntry(name="root", sha256=hash_key(ADMIN_KEY), scopes=("admin",))])


@pytest.fixture
def oversight(written: AuditConfig) -> Iterator[Oversight]:
    ov = Oversight(AuditStore.from_config(written), keys=keys(), verify_interval_s=None)
    yield ov
    ov.close()


@pytest.fixture
async def client(oversight: Oversight) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(oversight), client=("10.1.2.3", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                 headers={"Authorization": f"Bearer {READER_KEY}"}) as c:
        yield c
