"""API keys: files and environment, hashed storage, scopes, and the dependency other routers
(the oversight API) reuse."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.testclient import TestClient

from steerguard.server.errors import install_handlers
from steerguard.server.keys import (
    ANONYMOUS,
    KeyRing,
    KeysError,
    Principal,
    hash_key,
    require_scope,
)


def test_env_keys_are_hashed_and_scoped() -> None:
    ring = KeyRing.load(env={"STEERGUARD_API_KEYS": "agent:sk-a:chat, author:sk-b:chat+steer"
                                                    "+audit:read"})
    assert [e.name for e in ring.entries] == ["agent", "author"]
    assert all("sk-" not in e.sha256 for e in ring.entries)
    author = ring.lookup("sk-b")
    assert author is not None and author.allows("audit:read") and author.allows("steer")
    agent = ring.lookup("sk-a")
    assert agent is not None and not agent.allows("steer")
    assert ring.lookup("sk-c") is None and ring.lookup("") is None


def test_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(f"keys:\n  - name: ops\n    sha256: {hash_key('sk-ops')}\n"
                    f"    scopes: [admin]\n")
    ring = KeyRing.load(path, env={})
    ops = ring.lookup("sk-ops")
    assert ops is not None and ops.allows("steer") and ops.allows("audit:read")


@pytest.mark.parametrize(("text", "expected"), [
    ("keys:\n  - name: x\n    sha256: abc\n    scopes: [chat]\n", "keys.0.sha256"),
    (f"keys:\n  - name: x\n    sha256: {'a' * 64}\n    scopes: [root]\n", "keys.0.scopes.0"),
    ("keys: [", "does not parse"),
    (f"keys:\n  - {{name: x, sha256: {'a' * 64}, scopes: [chat]}}\n"
     f"  - {{name: x, sha256: {'b' * 64}, scopes: [chat]}}\n", "duplicate key name"),
])
def test_bad_keys_files_name_the_entry(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeysError, match=expected) as info:
        KeyRing.load(path, env={})
    assert str(path) in str(info.value) or "duplicate" in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [
    ("agent:sk-a", "expected name:key:scope"),
    ("agent::chat", "the key is empty"),
    ("agent:sk-a:root", "scopes"),
])
def test_bad_env_entries(value: str, expected: str) -> None:
    with pytest.raises(KeysError, match=expected):
        KeyRing.load(env={"STEERGUARD_API_KEYS": value})


def test_missing_keys_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeysError, match="cannot read keys file"):
        KeyRing.load(tmp_path / "absent.yaml", env={})


def app_with(ring: KeyRing) -> TestClient:
    router = APIRouter()

    @router.get("/v1/audit/ping")
    def ping(who: Principal = Depends(require_scope("audit:read"))) -> dict[str, str]:
        return {"name": who.name}

    app = FastAPI()
    app.state.keys = ring
    install_handlers(app)
    app.include_router(router)
    return TestClient(app)


def test_require_scope_for_other_routers() -> None:
    ring = KeyRing.load(env={"STEERGUARD_API_KEYS": "agent:sk-a:chat,auditor:sk-r:audit:read"})
    client = app_with(ring)
    assert client.get("/v1/audit/ping", headers={"Authorization": "Bearer sk-r"}).json() == {
        "name": "auditor"}
    denied = client.get("/v1/audit/ping", headers={"Authorization": "Bearer sk-a"})
    assert denied.status_code == 403
    assert denied.headers["content-type"].startswith("application/problem+json")
    assert "audit:read" in denied.json()["detail"]
    assert client.get("/v1/audit/ping").status_code == 401
    assert client.get("/v1/audit/ping", headers={"X-API-Key": "sk-r"}).status_code == 200


def test_no_keys_means_anonymous_with_every_scope() -> None:
    client = app_with(KeyRing())
    assert client.get("/v1/audit/ping").json() == {"name": ANONYMOUS.name}
