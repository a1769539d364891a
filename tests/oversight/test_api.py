"""The audit API against records the real writer put in a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from steerguard.audit import AuditConfig, AuditLog, AuditStore
from steerguard.audit.verify import verify_export
from steerguard.canonical import canonical
from steerguard.oversight import Oversight
from steerguard.oversight.app import create_app
from steerguard.policy.decision import Decision
from tests.audit import factories as f
from tests.oversight.conftest import CHAT_KEY, READER_KEY

pytestmark = pytest.mark.redis


def verify_file(path: Path) -> subprocess.CompletedProcess[str]:
    """`steerguard audit verify --file` in a process of its own."""
    return subprocess.run(
        [sys.executable, "-c", "from steerguard.cli.app import main; main()", "audit",
         "verify", "--file", str(path)],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])


def _problem(r: httpx.Response, status: int, field: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["detail"]
    if field is not None:
        assert body["field"] == field, body
    assert "Traceback" not in r.text
    return body


async def test_records_filter_by_raw_user_id_turned_into_its_reference(
        client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/audit/records", params={"user": "alice", "kind": "decision"})
    assert r.status_code == 200
    recs = r.json()["records"]
    assert len(recs) == 3 and r.json()["next_cursor"] is None
    refs = {x["user_ref"] for x in recs}
    assert len(refs) == 1 and "alice" not in refs.pop()  # keyed, never the raw id


@pytest.mark.parametrize(("params", "count"), [
    ({"session": "s-a"}, 9), ({"rule": "vip-formal"}, 9), ({"vector": "calm"}, 6),
    ({"outcome": "completed"}, 18), ({"outcome": "error"}, 0), ({"kind": "intervention"}, 12),
])
async def test_records_filters(client: httpx.AsyncClient, params: dict, count: int) -> None:
    r = await client.get("/v1/audit/records", params=params)
    assert r.status_code == 200, r.text
    assert len(r.json()["records"]) == count


async def test_cursor_pages_cover_every_record_once(client: httpx.AsyncClient) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/v1/audit/records", params=params)).json()
        seen += [x["record_id"] for x in body["records"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 18 == len(set(seen))


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": 501}, "limit"), ({"limit": 0}, "limit"), ({"limit": "many"}, "limit"),
    ({"since": "2020-01-01T00:00:00"}, "since"), ({"since": "yesterday"}, "since"),
    ({"since": "1969-06-01T00:00:00", "until": "1969-06-02T00:00:00"}, "since"),
    ({"outcome": "exploded"}, "outcome"), ({"cursor": "not-a-cursor"}, "cursor"),
    ({"usr": "alice"}, "usr"), ({"session": "x" * 201}, "session"),
])
async def test_bad_parameters_are_problems_naming_the_field(
        client: httpx.AsyncClient, params: dict, field: str) -> None:
    _problem(await client.get("/v1/audit/records", params=params), 400, field)


async def test_decision_with_its_interventions(client: httpx.AsyncClient) -> None:
    did = f.decision(2, rule="minor-calm").decision_id
    body = (await client.get(f"/v1/audit/decisions/{did}")).json()
    assert body["decision"]["decision_id"] == did
    assert [iv["vector"] for iv in body["interventions"]] == ["calm", "formal"]
    assert body["interventions"][0]["measurements"][0]["projection_after"] == 0.35
    _problem(await client.get("/v1/audit/decisions/nosuchdecision"), 404, "decision_id")


async def test_stats_count_outcomes_rules_vectors_and_failed_closed(
        client: httpx.AsyncClient, written: AuditConfig) -> None:
    closed = Decision(decision_id="closed-1", bundle=f.BUNDLE, failed_closed=True,
                      errors=("probe unavailable",))
    with AuditLog(written) as log:
        log.record(closed, None, outcome=RuntimeError("refused"), session_id="s-c")
        assert log.flush(10)
    body = (await client.get("/v1/audit/stats", params={"bucket": "hour"})).json()
    total = body["total"]
    assert total["decisions"] == 7 and total["interventions"] == 12
    assert total["failed_closed"] == 1
    assert total["outcomes"] == {"completed": 6, "error": 1}
    assert total["rules"] == {"minor-calm": 3, "vip-formal": 3}
    assert total["vectors"] == {"calm": 6, "formal": 6}
    _problem(await client.get("/v1/audit/stats", params={"bucket": "week"}), 400, "bucket")


async def test_verify_reports_the_first_problem_of_a_range(
        client: httpx.AsyncClient, oversight: Oversight) -> None:
    body = (await client.get("/v1/audit/verify")).json()
    assert body["ok"] is True and body["records"] == 18 and body["first"] is None
    assert body["watch"]["last_pass_at"] is None
    store = oversight.store
    stream = store.keys.stream(store.days()[0])
    entries = store.client.xrange(stream)
    sid, fields = entries[4]
    rec = json.loads(fields[b"r"])
    rec["strength"] = 0.0
    store.client.delete(stream)  # rebuilt as someone with full rights could
    for i, (s, fl) in enumerate(entries):
        store.client.xadd(stream, {b"r": canonical(rec), b"h": fl[b"h"]} if i == 4 else fl,
                          id=s)
    body = (await client.get("/v1/audit/verify")).json()
    assert body["ok"] is False
    assert body["first"]["kind"] == "modified" and body["first"]["seq"] == 4
    assert body["first"]["where"].endswith(sid.decode())
    _problem(await client.get("/v1/audit/verify",
                              params={"since": "2026-01-01T00:00:00",
                                      "until": "2026-01-20T00:00:00"}), 400, "since")


async def test_watch_pass_is_reported_from_its_checkpoint_file(
        client: httpx.AsyncClient, written: AuditConfig) -> None:
    store = AuditStore.from_config(written)
    from steerguard.audit.watch import LogWatcher

    result = LogWatcher(store.client, store.keys, written.resolved_checkpoint_path).step()
    assert result.ok
    body = (await client.get("/v1/audit/verify")).json()
    assert body["watch"]["last_pass_at"] is not None and body["watch"]["chains"] == 1


async def test_jsonl_export_verifies_offline_with_the_cli(
        client: httpx.AsyncClient, tmp_path: Path) -> None:
    r = await client.get("/v1/audit/export", params={"format": "jsonl"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    assert "attachment" in r.headers["content-disposition"]
    path = tmp_path / "audit.jsonl"
    path.write_bytes(r.content)
    assert len(r.content.splitlines()) == 18
    assert verify_export(path).ok
    cli = verify_file(path)
    assert cli.returncode == 0 and "ok" in cli.stdout, cli.stdout + cli.stderr
    lines = path.read_bytes().splitlines()
    body = json.loads(lines[1])
    assert body["kind"] == "intervention"
    body["strength"] = 0.0  # hide how hard the model was steered
    lines[1] = canonical(body)
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert not verify_export(path).ok
    assert verify_file(path).returncode == 1


async def test_csv_export(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/audit/export", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = r.text.strip().splitlines()
    assert rows[0].startswith("ts,time,kind,record_id") and len(rows) == 19
    _problem(await client.get("/v1/audit/export", params={"format": "xml"}), 400, "format")


async def test_keys_and_scopes(oversight: Oversight, shared_redis: redis.Redis,
                               prefix: str) -> None:
    before = sorted(shared_redis.scan_iter(match=f"{prefix}:*"))
    transport = httpx.ASGITransport(app=create_app(oversight), client=("10.1.2.3", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        r = await c.get("/v1/audit/records")
        _problem(r, 401)
        assert r.headers["www-authenticate"] == "Bearer"
        _problem(await c.get("/v1/audit/records",
                             headers={"Authorization": "Bearer sk-wrong-key-0000000000"}), 401)
        for path in ("/v1/audit/records", "/v1/audit/stats", "/v1/audit/verify",
                     "/v1/audit/export", "/v1/audit/decisions/x"):
            body = _problem(await c.get(path, headers={"Authorization": f"Bearer {CHAT_KEY}"}),
                            403)
            assert "audit:read" in body["detail"]
        ok = await c.get("/v1/audit/records", headers={"Authorization": f"Bearer {READER_KEY}"})
        assert ok.status_code == 200
    assert sorted(shared_redis.scan_iter(match=f"{prefix}:*")) == before  # wrote nothing
    assert oversight.access.session_count == 0


async def test_without_keys_only_loopback_clients_read(written: AuditConfig) -> None:
    ov = Oversight(AuditStore.from_config(written), verify_interval_s=None)
    try:
        app = create_app(ov)
        for host, status in (("127.0.0.1", 200), ("::1", 200), ("192.168.1.9", 403)):
            transport = httpx.ASGITransport(app=app, client=(host, 5000))
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
                r = await c.get("/v1/audit/records")
                assert r.status_code == status, (host, r.text)
    finally:
        ov.close()


async def test_unreachable_store_is_a_503(written: AuditConfig, tmp_path: Path) -> None:
    dead = AuditConfig(redis_url="redis://127.0.0.1:1/0", key_prefix="sgdead",
                       home=tmp_path, user_hmac_key="k" * 32, socket_timeout_s=0.5)
    ov = Oversight(AuditStore.from_config(dead), verify_interval_s=None)
    try:
        transport = httpx.ASGITransport(app=create_app(ov), client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
            for path in ("/v1/audit/records", "/v1/audit/stats", "/v1/audit/export",
                         "/v1/audit/verify"):
                body = _problem(await c.get(path), 503)
                assert "Redis" in body["detail"]
    finally:
        ov.close()


def test_openapi_lists_the_query_parameters(oversight: Oversight) -> None:
    spec = create_app(oversight).openapi()
    params = {p["name"] for p in spec["paths"]["/v1/audit/records"]["get"]["parameters"]}
    assert {"user", "session", "decision", "rule", "vector", "outcome", "since", "until",
            "limit", "cursor"} <= params


def test_no_generated_request_gets_a_500(oversight: Oversight) -> None:
    """Every audit operation of the OpenAPI spec, fuzzed with a key that may read: answers
    or problem+json, never a server fault."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(oversight))
    operations = [r.ok() for r in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/audit/records", "/v1/audit/export"}
    seen: dict[int, int] = {}
    for operation in operations:

        @settings(max_examples=30, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case) -> None:  # type: ignore[no-untyped-def]
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {READER_KEY}"}
            response = case.call()
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, response.text[:300]
            assert "Traceback" not in response.text
            if response.status_code >= 400:
                assert response.headers["content-type"][0] == "application/problem+json"

        check()
    assert 200 in seen and 400 in seen, seen
