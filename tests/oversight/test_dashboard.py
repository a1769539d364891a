"""Dashboard pages over real records (in-process; tests/oversight/test_browser.py drives a
real browser against a real server)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx
import pytest
import redis

from steerguard.audit import AuditConfig, AuditStore
from steerguard.oversight import Oversight
from steerguard.oversight.access import CSRF_COOKIE, SESSION_COOKIE
from steerguard.oversight.app import create_app
from tests.audit import factories as f
from tests.oversight.conftest import ADMIN_KEY, CHAT_KEY, READER_KEY

pytestmark = pytest.mark.redis
STATIC = Path(__file__).parents[2] / "steerguard" / "oversight" / "static"


def _browser(oversight: Oversight) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(oversight), client=("10.1.2.3", 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def _sign_in(c: httpx.AsyncClient, key: str = READER_KEY,
                   next_: str = "/dashboard/") -> httpx.Response:
    form = await c.get("/dashboard/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    return await c.post("/dashboard/login",
                        data={"csrf": csrf.group(1), "api_key": key, "next": next_})


async def test_pages_send_visitors_to_sign_in(oversight: Oversight) -> None:
    async with _browser(oversight) as c:
        r = await c.get("/dashboard/records?session=s-a")
        assert r.status_code == 303
        assert r.headers["location"] == ("/dashboard/login?next="
                                         "%2Fdashboard%2Frecords%3Fsession%3Ds-a")
        r = await _sign_in(c, next_="/dashboard/records?session=s-a")
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/records?session=s-a"
        cookie = r.headers["set-cookie"]
        assert SESSION_COOKIE in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        page = await c.get("/dashboard/records?session=s-a")
        assert page.status_code == 200 and page.text.count('class="kind-') == 9


async def test_sign_in_refusals_store_no_session(oversight: Oversight,
                                                 shared_redis: redis.Redis,
                                                 prefix: str) -> None:
    before = sorted(shared_redis.scan_iter(match=f"{prefix}:*"))
    async with _browser(oversight) as c:
        await c.get("/dashboard/login")
        no_csrf = await c.post("/dashboard/login", data={"api_key": READER_KEY})
        assert "error=csrf" in no_csrf.headers["location"]
        back = await c.get(no_csrf.headers["location"])
        assert back.status_code == 200 and "CSRF token missing or wrong" in back.text
        c.cookies.delete(CSRF_COOKIE)
        stale = await c.post("/dashboard/login", data={"api_key": READER_KEY, "csrf": "x"})
        assert "error=csrf" in stale.headers["location"]
        unknown = await _sign_in(c, "sk-not-a-key-000000000000")
        assert "error=unknown" in unknown.headers["location"]
        chat = await _sign_in(c, CHAT_KEY)
        assert "error=scope" in chat.headers["location"]
        assert "lacks the audit:read scope" in (await c.get(chat.headers["location"])).text
        assert READER_KEY not in unknown.headers["location"] + chat.headers["location"]
        other_site = await c.post("/dashboard/login", headers={"Origin": "https://evil.example"},
                                  data={"api_key": READER_KEY, "csrf": "x"})
        assert other_site.status_code == 403
        assert SESSION_COOKIE not in c.cookies
    assert oversight.access.session_count == 0
    assert sorted(shared_redis.scan_iter(match=f"{prefix}:*")) == before


async def test_admin_key_signs_in_and_sign_out_needs_its_token(oversight: Oversight) -> None:
    async with _browser(oversight) as c:
        assert (await _sign_in(c, ADMIN_KEY)).status_code == 303
        page = await c.get("/dashboard/")
        assert page.status_code == 200 and "signed in as <strong>root</strong>" in page.text
        forged = await c.post("/dashboard/logout", data={"csrf": "forged"})
        assert forged.status_code == 403
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        out = await c.post("/dashboard/logout", data={"csrf": csrf.group(1)})
        assert out.status_code == 303 and oversight.access.session_count == 0
        assert (await c.get("/dashboard/")).status_code == 303


async def test_next_never_leaves_the_dashboard(oversight: Oversight) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "/v1/audit/export",
                   "/dashboard\\..\\x"):
        async with _browser(oversight) as c:
            r = await _sign_in(c, next_=target)
            assert r.headers["location"] == "/dashboard/", target


async def test_decision_page_shows_why_and_what_with_markup_as_text(
        oversight: Oversight) -> None:
    did = f.decision(0, rule="minor-calm").decision_id
    async with _browser(oversight) as c:
        await _sign_in(c)
        r = await c.get(f"/dashboard/decisions/{did}")
    assert r.status_code == 200
    html = r.text
    assert "minor-calm" in html and "lost_exclusive_group" in html and "2025.06.1" in html
    assert 'id="chart-iv-0"' in html and 'id="chart-iv-1"' in html
    # the quote as text: escaped in HTML, never a tag, and the CSP allows no inline script
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<script>window.pwned" not in html and "<b>bold" not in html
    assert "script-src 'self'" in r.headers["content-security-policy"]
    scripts = re.findall(r"<script(?![^>]*type=\"application/json\")[^>]*>(.*?)</script>",
                         html, re.S)
    assert all(body.strip() == "" for body in scripts)  # only src= scripts run


async def test_session_user_overview_live_verify_pages(oversight: Oversight) -> None:
    async with _browser(oversight) as c:
        await _sign_in(c)
        session = await c.get("/dashboard/session", params={"id": "s-b"})
        assert session.status_code == 200 and session.text.count("<li class=\"outcome-") == 3
        ref = oversight.store.user_ref("bob")
        user = await c.get("/dashboard/user", params={"ref": ref})
        assert user.status_code == 200 and 'id="user-decisions">3<' in user.text
        overview = await c.get("/dashboard/", params={"range": "6h"})
        assert overview.status_code == 200 and 'id="n-decisions">6<' in overview.text
        assert (await c.get("/dashboard/", params={"range": "1y"})).status_code == 400
        assert (await c.get("/dashboard/live")).status_code == 200
        verify = await c.get("/dashboard/verify")
        assert verify.status_code == 200 and "Intact:" in verify.text
        bad = await c.get("/dashboard/records", params={"limit": "lots"})
        assert bad.status_code == 400 and "limit" in bad.text and "<h1>400" in bad.text


async def test_records_page_keeps_filters_in_the_url_and_pages_by_cursor(
        oversight: Oversight) -> None:
    async with _browser(oversight) as c:
        await _sign_in(c)
        r = await c.get("/dashboard/records", params={"rule": "minor-calm", "limit": 2})
        nxt = re.search(r'id="next-page" href="([^"]+)"', r.text)
        assert nxt is not None
        url = nxt.group(1).replace("&amp;", "&")
        assert "rule=minor-calm" in url and "limit=2" in url and "cursor=" in url
        seen = r.text.count('class="kind-')
        while True:
            page = await c.get(url)
            seen += page.text.count('class="kind-')
            nxt = re.search(r'id="next-page" href="([^"]+)"', page.text)
            if nxt is None:
                break
            url = nxt.group(1).replace("&amp;", "&")
        assert seen == 9


async def test_dashboard_export_is_the_api_export(oversight: Oversight) -> None:
    async with _browser(oversight) as c:
        await _sign_in(c)
        r = await c.get("/dashboard/export", params={"format": "jsonl"})
    assert r.status_code == 200 and len(r.content.splitlines()) == 18


async def test_open_mode_needs_no_sign_in_from_loopback(written: AuditConfig) -> None:
    ov = Oversight(AuditStore.from_config(written), verify_interval_s=None)
    try:
        app = create_app(ov)
        local = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 1)),
                                  base_url="http://x")
        remote = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("8.8.8.8", 1)),
                                   base_url="http://x")
        async with local, remote:
            page = await local.get("/dashboard/")
            assert page.status_code == 200 and "loopback mode" in page.text
            assert (await remote.get("/dashboard/")).status_code == 403
    finally:
        ov.close()


async def test_banner_follows_the_background_check(written: AuditConfig) -> None:
    ov = Oversight(AuditStore.from_config(written), verify_interval_s=None)
    try:
        assert ov.service.verdict().state == "pending"
        assert ov.service.check_now().state == "ok"
        store = ov.store
        stream = store.keys.stream(store.days()[0])
        store.client.xadd(stream, {"r": b"{}", "h": b""}, maxlen=0)  # empties the day
        v = ov.service.check_now()
        assert v.state == "failed" and v.first is not None
        async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(ov), client=("127.0.0.1", 1)),
                base_url="http://x") as c:
            page = await c.get("/dashboard/")
        assert 'class="banner banner-failed"' in page.text
    finally:
        ov.close()


def test_vendored_files_match_their_recorded_checksums() -> None:
    table = (STATIC / "VENDORED.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", table, re.M)
    assert {name for name, _ in rows} == {"uPlot.iife.min.js", "uPlot.min.css"}
    for name, digest in rows:
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name
    assert "MIT" in (STATIC / "uPlot.LICENSE").read_text()


def test_background_check_between_full_passes_walks_new_records_and_writes_nothing(
        written: AuditConfig) -> None:
    from tests.oversight.conftest import write_records

    ov = Oversight(AuditStore.from_config(written), verify_interval_s=None)
    checkpoint = written.resolved_checkpoint_path
    try:
        first = ov.service.check_now(full=True)
        assert (first.state, first.full, first.records) == ("ok", True, 18)
        write_records(written, 2)  # a second writer chain: 6 more records
        on_file = checkpoint.read_bytes() if checkpoint.exists() else b""  # the writers'
        later = ov.service.check_now(full=False)
        assert (later.state, later.full, later.records) == ("ok", False, 24)
        assert later.full_at == first.full_at
        store = ov.store
        stream = store.keys.stream(store.days()[-1])
        store.client.xdel(stream, store.client.xrange(stream, count=1)[0][0])
        broken = ov.service.check_now(full=False)
        assert broken.state == "failed" and broken.first is not None
        assert broken.first.kind == "truncated"
        # the checks read the checkpoint file; they never add to it
        assert (checkpoint.read_bytes() if checkpoint.exists() else b"") == on_file
    finally:
        ov.close()
