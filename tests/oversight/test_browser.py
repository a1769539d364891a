"""The dashboard in a real browser (Debian's chromium through Playwright) against a real
`steerguard serve` process, with records written by the real pipeline (the bundled model,
the shipped policy) into a real Redis under a test prefix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from steerguard.canonical import canonical
from tests.conftest import own_prefix
from tests.oversight.conftest import CHAT_KEY, HMAC_KEY, READER_KEY, URL
from tests.oversight.test_api import verify_file

pytestmark = [pytest.mark.browser, pytest.mark.real_model, pytest.mark.redis]
ROOT = Path(__file__).parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
HOSTILE = ('I am so stressed <script>window.pwned=1</script>'
           '<img src=x onerror="window.pwned=2"> my order is late')


class Server:
    def __init__(self, proc: subprocess.Popen[str], base: str, prefix: str) -> None:
        self.proc = proc
        self.base = base
        self.prefix = prefix
        self.http = httpx.Client(base_url=base, timeout=120)
        self.model = ""

    def chat(self, text: str, session: str, user: str, **profile: Any) -> dict[str, Any]:
        r = self.http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {CHAT_KEY}"},
                           json={"model": self.model, "max_tokens": 4,
                                 "messages": [{"role": "user", "content": text}],
                                 "steerguard": {"session_id": session,
                                                "profile": {"user_id": user, **profile}}})
        assert r.status_code == 200, r.text
        return r.json()["steerguard"]

    def records(self, **params: Any) -> list[dict[str, Any]]:
        r = self.http.get("/v1/audit/records", params=params,
                          headers={"Authorization": f"Bearer {READER_KEY}"})
        assert r.status_code == 200, r.text
        return r.json()["records"]

    def wait_for(self, decision_id: str, n: int) -> None:
        deadline = time.monotonic() + 30
        while len(self.records(decision=decision_id)) < n:
            assert time.monotonic() < deadline, f"records of {decision_id} never arrived"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shared_redis: redis.Redis
           ) -> Iterator[Server]:
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium (apt-get install chromium)")
    with own_prefix(shared_redis, "sgovb") as prefix:
        yield from _serve(tmp_path_factory, prefix)


def _serve(tmp_path_factory: pytest.TempPathFactory, prefix: str) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("serve")
    cfg = work / "steerguard.yaml"
    cfg.write_text(yaml.safe_dump({
        "audit": {"redis_url": URL, "key_prefix": prefix, "user_hmac_key": HMAC_KEY,
                  "store_text": True, "spill_fsync": False, "home": str(work / "audit-home")},
        "server": {"audit_verify_interval_s": 0.5, "audit_full_verify_interval_s": 2.0},
    }))
    env = {**os.environ, "STEERGUARD_API_KEYS":
           f"auditor:{READER_KEY}:audit:read,agent:{CHAT_KEY}:chat",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from steerguard.cli.app import main; main()", "serve",
         "--port", "0", "--config", str(cfg)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=(work / "stderr").open("w"),
        text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving on" in line, (work / "stderr").read_text()
        srv = Server(proc, line.split()[-1], prefix)
        deadline = time.monotonic() + 300
        while srv.http.get("/healthz").status_code != 200:
            assert proc.poll() is None, (work / "stderr").read_text()
            assert time.monotonic() < deadline, "the model never loaded"
            time.sleep(0.5)
        srv.model = srv.http.get("/v1/models", headers={
            "Authorization": f"Bearer {CHAT_KEY}"}).json()["data"][0]["id"]
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def records(server: Server) -> dict[str, Any]:
    """Three requests through the real server: a distressed minor with hostile markup in
    the message, and two more turns of other sessions."""
    session = "sess-" + uuid.uuid4().hex[:8]
    first = server.chat(HOSTILE, session, "user-7", age_band="minor")
    second = server.chat("Where is my parcel?", session, "user-7", age_band="minor")
    other = server.chat("Hello there", "sess-other", "user-9", age_band="adult")
    for res in (first, second, other):
        server.wait_for(res["decision_id"], len(res["audit_ids"]))
    return {"session": session, "first": first, "second": second, "other": other}


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: STEERGUARD_SCREENSHOTS (docs/oversight makes the docs'), else
    a temporary folder."""
    out = os.environ.get("STEERGUARD_SCREENSHOTS")
    path = Path(out) if out else tmp_path_factory.mktemp("shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def context(browser: Any, server: Server) -> Iterator[Any]:
    ctx = browser.new_context(base_url=server.base, viewport={"width": 1360, "height": 900},
                              accept_downloads=True)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: Any) -> Iterator[Any]:
    """A tab whose console errors and uncaught exceptions fail the test."""
    pg = context.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    yield pg
    pg.close()
    assert errors == [], errors


def test_sign_in_with_an_api_key(page: Any, shots: Path, records: dict[str, Any]) -> None:
    page.goto("/dashboard/records")
    assert "/dashboard/login" in page.url
    page.screenshot(path=shots / "login.png")
    page.fill("input[name=api_key]", CHAT_KEY)
    page.click("button[type=submit]")
    assert "lacks the audit:read scope" in page.inner_text("main")
    page.fill("input[name=api_key]", READER_KEY)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/records")
    assert "signed in as auditor" in page.inner_text("header")
    cookie = next(c for c in page.context.cookies() if c["name"] == "sg_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # scripts cannot read the session


def test_overview_charts(page: Any, shots: Path, records: dict[str, Any]) -> None:
    page.goto("/dashboard/")
    page.wait_for_selector("#chart-decisions[data-rendered='1'] canvas")
    page.wait_for_selector("#chain-banner.banner-ok")
    assert int(page.inner_text("#n-decisions")) == 3
    page.screenshot(path=shots / "overview.png", full_page=True)


def test_filter_by_session(page: Any, shots: Path, records: dict[str, Any]) -> None:
    page.goto("/dashboard/records")
    page.fill("input[name=session]", records["session"])
    page.select_option("select[name=kind]", "decision")
    page.click("#filters button[type=submit]")
    page.wait_for_url(f"**session={records['session']}**")
    rows = page.locator("#records-table tbody tr")
    assert rows.count() == 2
    assert records["other"]["decision_id"][:12] not in page.inner_text("#records-table")
    shared = page.url  # the filter state is in the address: a new tab shows the same view
    other = page.context.new_page()
    other.goto(shared)
    assert other.locator("#records-table tbody tr").count() == 2
    other.close()
    page.screenshot(path=shots / "records.png", full_page=True)


def test_decision_shows_rule_evidence_and_per_layer_chart(
        page: Any, shots: Path, records: dict[str, Any]) -> None:
    first = records["first"]
    page.goto("/dashboard/records?" + f"session={records['session']}&kind=decision")
    page.click(f"a[title='{first['decision_id']}']")
    page.wait_for_url(f"**/dashboard/decisions/{first['decision_id']}")
    matched = page.inner_text("#matched")
    for rule in first["rules"]:
        assert rule in matched
    assert "distress-empathy" in matched and "minor-safety" in matched
    assert "so stressed" in matched  # the keyword evidence
    # hostile markup in the stored text is shown as text and never runs
    assert "<script>window.pwned=1</script>" in page.inner_text("main")
    assert page.evaluate("window.pwned") is None
    assert page.locator("main img").count() == 0
    page.wait_for_selector("#chart-iv-0[data-rendered='1'] canvas")
    assert page.locator(".intervention").count() == len(first["plan"])
    assert page.locator("table.measurements tbody tr").count() > 0
    page.screenshot(path=shots / "decision.png", full_page=True)
    page.click("#session-link")
    page.wait_for_url("**/dashboard/session?id=*")
    assert page.locator("#timeline li").count() == 2
    page.screenshot(path=shots / "session.png", full_page=True)
    page.go_back()
    page.click("#user-link")
    page.wait_for_url("**/dashboard/user?ref=*")
    assert page.inner_text("#user-decisions") == "2"
    page.screenshot(path=shots / "user.png", full_page=True)


def test_live_view_shows_a_request_as_it_happens(
        page: Any, shots: Path, server: Server, records: dict[str, Any]) -> None:
    page.goto("/dashboard/live")
    page.wait_for_selector("#live-status.ok")
    res = server.chat("I am so stressed, can you help?", records["session"], "user-7",
                      age_band="adult")
    page.wait_for_selector(f"#live-rows tr[data-decision='{res['decision_id']}']",
                           timeout=30_000)
    rows = page.locator(f"#live-rows tr[data-decision='{res['decision_id']}']")
    assert rows.count() == len(res["audit_ids"])
    page.screenshot(path=shots / "live.png", full_page=True)


def test_download_an_export_and_verify_it(page: Any, tmp_path: Path,
                                          records: dict[str, Any]) -> None:
    page.goto("/dashboard/records")
    with page.expect_download() as info:
        page.click("text=JSONL (verifiable)")
    path = tmp_path / "export.jsonl"
    info.value.save_as(path)
    lines = path.read_bytes().splitlines()
    assert len(lines) >= 3
    cli = verify_file(path)
    assert cli.returncode == 0 and "ok" in cli.stdout, cli.stdout + cli.stderr


def test_banner_turns_red_after_tampering(page: Any, shots: Path, server: Server,
                                          records: dict[str, Any]) -> None:
    page.goto("/dashboard/verify")
    page.wait_for_selector("#range-verdict.banner-ok")
    page.screenshot(path=shots / "verify.png", full_page=True)
    client = redis.Redis.from_url(URL)
    try:
        days = [d.decode() for d in client.zrange(f"{server.prefix}:days", 0, -1)]
        stream = f"{server.prefix}:{{{days[-1]}}}:log"
        entries = client.xrange(stream)
        sid, fields = entries[1]
        body = json.loads(fields[b"r"])
        body["strength"] = 0.0  # hide how hard the model was steered
        client.delete(stream)  # rebuilt, ids kept, as someone with full rights could
        for s, fl in entries:
            client.xadd(stream, {b"r": canonical(body), b"h": fl[b"h"]} if s == sid else fl,
                        id=s)
    finally:
        client.close()
    deadline = time.monotonic() + 30
    while True:
        page.goto("/dashboard/")
        if page.locator("#chain-banner.banner-failed").count():
            break
        assert time.monotonic() < deadline, page.inner_text("#chain-banner")
        time.sleep(0.5)
    banner = page.inner_text("#chain-banner")
    assert "modified" in banner and sid.decode() in banner
    page.screenshot(path=shots / "banner-red.png")
    page.goto("/dashboard/verify")
    assert "modified" in page.inner_text("#range-verdict")


def test_screenshots_were_taken(shots: Path) -> None:
    names = {p.name for p in shots.glob("*.png")}
    assert {"login.png", "overview.png", "records.png", "decision.png", "session.png",
            "user.png", "live.png", "verify.png", "banner-red.png"} <= names
