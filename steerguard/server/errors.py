"""Every error the server answers is `application/problem+json` (RFC 9457) naming the field
and what was expected. No response carries a stack trace, and nothing a client sends yields
a 500: a fault of the server itself is logged and answered 503."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("steerguard.server")

PROBLEM_JSON = "application/problem+json"
_TITLES = {400: "bad request", 401: "unauthorized", 403: "forbidden", 404: "not found",
           405: "method not allowed", 413: "request body too large", 415: "unsupported media",
           422: "bad request", 429: "too many requests", 503: "service unavailable"}


class Problem(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    field: str | None = None
    expected: str | None = None


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        field: str | None = None,
        expected: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field
        self.expected = expected
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        """The problem+json answer; also how a handler answers a problem it does not raise."""
        body = Problem(title=self.title, status=self.status, detail=self.detail,
                       field=self.field, expected=self.expected)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=self.status,
                            media_type=PROBLEM_JSON, headers=self.headers)


def field_path(loc: Sequence[Any]) -> str:
    """('body', 'messages', 0, 'content') -> 'messages[0].content'."""
    parts = [p for p in loc if p not in ("body",)]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "body"


def _validation_problem(errors: Sequence[Mapping[str, Any]]) -> JSONResponse:
    first = errors[0] if errors else {"loc": (), "msg": "invalid body"}
    where = "body" if first.get("type") == "json_invalid" else field_path(first.get("loc", ()))
    detail = "; ".join(
        f"{'body' if e.get('type') == 'json_invalid' else field_path(e.get('loc', ()))}: "
        f"{e.get('msg', 'invalid')}" for e in errors[:5])
    if len(errors) > 5:
        detail += f"; and {len(errors) - 5} more"
    return ApiError(400, "invalid request body", detail, field=where,
                    expected=_expected(first)).response()


def _expected(error: Mapping[str, Any]) -> str | None:
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind == "json_invalid":
        return "a JSON object"
    if kind == "extra_forbidden":
        return "only the fields of the OpenAI chat-completions request (plus `steerguard`)"
    if kind == "missing":
        return "this field"
    if "expected" in ctx:
        return str(ctx["expected"])
    return str(error.get("msg")) if error.get("msg") else None


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_problem(list(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code if exc.status_code < 500 else 503
        return ApiError(status, _TITLES.get(status, "error"), str(exc.detail),
                        headers=getattr(exc, "headers", None)).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.exception("unexpected server fault, incident %s", incident)
        return ApiError(503, "service unavailable",
                        f"the server could not answer (incident {incident}); retry later",
                        headers={"Retry-After": "1"}).response()
