"""The dashboard (`/dashboard/`): server-rendered pages over the oversight service.

Every value from a record reaches a page through Jinja2's autoescaping (HTML) or as JSON in
a `<script type="application/json">` block (escaped by `tojson`); the only scripts that run
are the dashboard's own files (the Content-Security-Policy forbids inline ones), and they
insert record text with `textContent`, never as markup."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import anyio
import orjson
from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from steerguard.audit.records import DecisionRecord, InterventionRecord
from steerguard.oversight.access import (
    COOKIE_PATH,
    CSRF_COOKIE,
    SCOPE,
    SESSION_COOKIE,
    Access,
    Principal,
    Session,
    same_token,
)
from steerguard.oversight.api import export_response
from steerguard.oversight.params import ExportQuery, RecordFilters, TimeRange
from steerguard.oversight.problems import OversightProblem
from steerguard.oversight.routing import SECURITY_HEADERS, ProblemRoute, parse_query
from steerguard.oversight.rows import record_row, table_row
from steerguard.oversight.service import STORE_ERRORS, OversightService
from steerguard.oversight.views import group, layer_chart, overview_charts, summarize

STATIC_FILES = {  # name -> media type; nothing else is served
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
RANGES = {"6h": (6, "hour"), "24h": (24, "hour"), "7d": (168, "hour"), "30d": (720, "day")}
PAGE_SIZE = 50
SESSION_RECORDS = 500
USER_RECORDS = 2000
_HEARTBEAT_MS = 1000


class _SignIn(Exception):
    def __init__(self, target: str) -> None:
        self.target = target


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("steerguard.oversight", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True, auto_reload=False)
    env.filters["t"] = _fmt_time
    env.filters["short"] = lambda s, n=12: (s or "")[:n]
    env.globals["qs"] = lambda d: urlencode({k: v for k, v in d.items() if v not in (None, "")})
    return env


def _fmt_time(value: datetime | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        value = datetime.fromtimestamp(value / 1000, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def _static() -> dict[str, tuple[bytes, str, str]]:
    root = resources.files("steerguard.oversight") / "static"
    out = {}
    for name, media in STATIC_FILES.items():
        data = (root / name).read_bytes()
        out[name] = (data, media, '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
    return out


def _safe_next(target: str | None) -> str:
    """Only a path of the dashboard: never another site (an open redirect)."""
    if not target:
        return "/dashboard/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/dashboard/") \
            or "\\" in target:
        return "/dashboard/"
    return target


def dashboard_router(service: OversightService, access: Access) -> APIRouter:
    env = _environment()
    static = _static()

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        session = access.session(request)
        ctx.setdefault("principal", getattr(request.state, "principal", None))
        html = env.get_template(name).render(
            request=request, session=session, open_mode=access.open_mode,
            verdict=service.verdict(), watch=service.watch(), prefix=service.prefix, **ctx)
        return HTMLResponse(html, status_code=status)

    class PageRoute(ProblemRoute):
        """Problems as an HTML page; a visitor who must sign in is sent to do so."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def run(request: Request) -> Response:
                try:
                    response = await handler(request)
                except _SignIn as exc:
                    response = RedirectResponse(
                        "/dashboard/login?" + urlencode({"next": exc.target}), 303)
                if (response.headers.get("content-type", "").startswith(
                        "application/problem+json")
                        and not request.url.path.startswith("/dashboard/live/events")):
                    body = orjson.loads(bytes(response.body))
                    response = render(request, "error.html", response.status_code,
                                      problem=body)
                for name, value in SECURITY_HEADERS.items():
                    response.headers.setdefault(name, value)
                return response

            return run

    def principal(request: Request) -> Principal:
        who = access.page(request)
        if who is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise _SignIn(target)
        if not who.allows(SCOPE):
            raise OversightProblem(403, "Forbidden", f"{who.name!r} lacks the {SCOPE} scope")
        request.state.principal = who
        return who

    signed: dict[str, Any] = {"dependencies": [Depends(principal)]}
    router = APIRouter(prefix="/dashboard", tags=["dashboard"], route_class=PageRoute,
                       include_in_schema=False)

    @router.get("/static/{name}")
    def static_file(name: str, request: Request) -> Response:
        found = static.get(name)
        if found is None:
            raise OversightProblem(404, "Not found", f"name: no static file {name!r}")
        data, media, etag = found
        headers = {"ETag": etag, "Cache-Control": "public, max-age=3600"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=media, headers=headers)

    # ---- sign-in ----------------------------------------------------------------------
    def login_page(request: Request, error: str = "", target: str = "/dashboard/"
                   ) -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        response = render(request, "login.html", csrf=token, error=error,
                          next=_safe_next(target))
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict",
                            path=COOKIE_PATH, secure=request.url.scheme == "https")
        return response

    @router.get("/login")
    def login_form(request: Request, next: str = "/dashboard/", error: str = "") -> Response:
        if access.open_mode or access.session(request):
            return RedirectResponse(_safe_next(next), 303)
        return login_page(request, error=refusals.get(error, ""), target=next)

    def _check_origin(request: Request) -> None:
        origin = request.headers.get("origin")
        if origin and origin != "null":
            mine = f"{request.url.scheme}://{request.url.netloc}"
            if origin != mine:
                raise OversightProblem(403, "Forbidden",
                                       f"Origin: {origin!r} is not this dashboard ({mine})")

    # Refusals are sent back to the form (POST, redirect, GET): the browser shows the
    # message on a page that loaded fine, and the key never travels in a URL.
    refusals = {
        "csrf": "The form expired or did not come from this page (CSRF token missing or "
                "wrong): sign in again.",
        "empty": "api_key: enter an API key.",
        "unknown": "That is not a known API key.",
        "scope": f"That key lacks the {SCOPE} scope: ask for a key that may read the audit "
                 "log.",
    }

    def refuse(code: str, target: str) -> RedirectResponse:
        return RedirectResponse("/dashboard/login?" + urlencode({"next": target,
                                                                 "error": code}), 303)

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        target = _safe_next(str(form.get("next") or ""))
        if access.open_mode:
            return RedirectResponse(target, 303)
        _check_origin(request)
        if not same_token(request.cookies.get(CSRF_COOKIE), str(form.get("csrf") or "")):
            return refuse("csrf", target)
        key = str(form.get("api_key") or "").strip()
        if not key:
            return refuse("empty", target)
        try:
            result = access.sign_in(key)
        except OversightProblem:
            return refuse("unknown", target)
        if not isinstance(result, Session):
            return refuse("scope", target)
        response = RedirectResponse(target, 303)
        response.set_cookie(SESSION_COOKIE, result.token, httponly=True, samesite="strict",
                            path=COOKIE_PATH, secure=request.url.scheme == "https",
                            max_age=int(access.session_ttl_s))
        response.delete_cookie(CSRF_COOKIE, path=COOKIE_PATH)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        form = await request.form()
        session = access.session(request)
        if session is not None:
            _check_origin(request)
            if not same_token(session.csrf, str(form.get("csrf") or "")):
                raise OversightProblem(403, "Forbidden", "csrf: the sign-out form's token "
                                       "is missing or wrong")
            access.sign_out(session.token)
        response = RedirectResponse("/dashboard/login", 303)
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response

    # ---- pages ------------------------------------------------------------------------
    @router.get("/", **signed)
    def overview(request: Request, range: str = "24h") -> HTMLResponse:
        if range not in RANGES:
            raise OversightProblem(400, "Bad request", f"range: one of {', '.join(RANGES)}, "
                                   f"not {range!r}", field="range")
        hours, bucket = RANGES[range]
        until = datetime.now(UTC)
        since = until - timedelta(hours=hours)
        from steerguard.oversight.params import StatsQuery

        stats = service.stats(StatsQuery(since=since, until=until, bucket=bucket))  # type: ignore[arg-type]
        return render(request, "overview.html", stats=stats, range=range, ranges=list(RANGES),
                      charts=overview_charts(stats, since, until), since=since, until=until,
                      top_rules=sorted(stats.total.rules.items(), key=lambda kv: -kv[1])[:10],
                      top_vectors=sorted(stats.total.vectors.items(),
                                         key=lambda kv: -kv[1])[:10])

    @router.get("/records", **signed)
    def records(request: Request) -> HTMLResponse:
        if not request.query_params:  # the newest records, until a filter is applied
            since = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
            f = RecordFilters(limit=PAGE_SIZE, since=since)
            return render(request, "records.html", filters=f, state=f.url_state(),
                          rows=[table_row(r) for r in service.latest(PAGE_SIZE)],
                          next_cursor=None, first_page=False, latest=True)
        fixed: dict[str, Any] = {}
        if "limit" not in request.query_params:
            fixed["limit"] = PAGE_SIZE
        if not request.query_params.get("since") and not request.query_params.get("cursor"):
            fixed["since"] = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
        f = parse_query(RecordFilters, request, **fixed)
        page = service.records(f)
        state = f.url_state()
        if f.limit != PAGE_SIZE:
            state["limit"] = str(f.limit)
        return render(request, "records.html", filters=f, state=state,
                      rows=[table_row(r) for r in page.records], next_cursor=page.cursor,
                      first_page=bool(f.cursor), latest=False)

    @router.get("/decisions/{decision_id}", **signed)
    def decision(request: Request,
                 decision_id: Annotated[str, Path(min_length=1, max_length=200)]
                 ) -> HTMLResponse:
        view = service.decision(decision_id)
        charts = [c for c in (layer_chart(iv) for iv in view.interventions) if c]
        return render(request, "decision.html", view=view, d=view.decision,
                      decision_id=decision_id, charts=charts,
                      any_record=view.decision or view.interventions[0])

    @router.get("/session", **signed)
    def session_page(request: Request, id: str = "",
                     cursor: str = "") -> HTMLResponse:
        if not id or len(id) > 200:
            raise OversightProblem(400, "Bad request", "id: a session id (1 to 200 "
                                   "characters)", field="id")
        page = service.records(RecordFilters(session=id, limit=SESSION_RECORDS,
                                             cursor=cursor or None))
        groups = group(page.records)
        return render(request, "session.html", session_id=id, groups=groups,
                      next_cursor=page.cursor, start=groups[0].ts if groups else 0)

    @router.get("/user", **signed)
    def user_page(request: Request, ref: str = "") -> HTMLResponse:
        if not ref or len(ref) > 200:
            raise OversightProblem(400, "Bad request", "ref: a user's keyed reference (as "
                                   "records carry it)", field="ref")
        recs: list[DecisionRecord | InterventionRecord] = []
        cursor = None
        while len(recs) < USER_RECORDS:
            page = service.records(RecordFilters(user_ref=ref, limit=500, cursor=cursor))
            recs.extend(page.records)
            cursor = page.cursor
            if cursor is None:
                break
        summary = summarize(recs)
        recent = group(recs)[-20:][::-1]
        return render(request, "user.html", ref=ref, s=summary, recent=recent,
                      capped=cursor is not None, cap=USER_RECORDS,
                      sessions=sorted(summary.sessions.items(), key=lambda kv: kv[1]["last"],
                                      reverse=True))

    @router.get("/live", **signed)
    def live(request: Request) -> HTMLResponse:
        return render(request, "live.html")

    @router.get("/live/events", **signed)
    async def live_events(request: Request) -> StreamingResponse:
        position = await anyio.to_thread.run_sync(
            service.live_start, request.headers.get("last-event-id"))

        async def events() -> AsyncIterator[bytes]:
            nonlocal position
            yield b"retry: 2000\n\n"
            while True:  # Starlette cancels this when the client goes away
                try:  # each read waits at most a heartbeat: a closed tab frees its thread
                    position, recs = await anyio.to_thread.run_sync(
                        service.live_read, position, _HEARTBEAT_MS)
                except STORE_ERRORS as exc:
                    msg = orjson.dumps({"detail": f"Redis: {type(exc).__name__}"})
                    yield b"event: problem\ndata: " + msg + b"\n\n"
                    await asyncio.sleep(2)
                    continue
                if not recs:
                    yield b": keep-alive\n\n"
                for pos, rec in recs:
                    data = orjson.dumps(record_row(rec))
                    yield b"id: " + pos.encode() + b"\nevent: record\ndata: " + data + b"\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    @router.get("/export", **signed)
    def export(request: Request) -> StreamingResponse:
        return export_response(service, parse_query(ExportQuery, request))

    @router.get("/verify", **signed)
    def verify(request: Request) -> HTMLResponse:
        q = parse_query(TimeRange, request)
        result = service.verify_range(q)
        return render(request, "verify.html", result=result)

    return router
