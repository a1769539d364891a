"""Errors as RFC 9457 problem details (`application/problem+json`): status, title, and a
detail that names the field, the value's fault and what was expected; never a traceback."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError

PROBLEM_TYPE = "application/problem+json"


class OversightProblem(Exception):
    """Raised by the oversight routes; `response()` is what the client gets."""

    def __init__(self, status: int, title: str, detail: str, *, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "about:blank", "title": self.title,
                               "status": self.status, "detail": self.detail}
        if self.field is not None:
            out["field"] = self.field
        return out

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, media_type=PROBLEM_TYPE,
                            headers=self.headers)


def bad_request(field: str, detail: str) -> OversightProblem:
    return OversightProblem(400, "Bad request", f"{field}: {detail}", field=field)


def from_validation(exc: ValidationError) -> OversightProblem:
    """The first invalid query parameter, by name, with what was expected."""
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(x) for x in err["loc"]) or "query"
    given = err.get("input")
    shown = f" (got {str(given)[:80]!r})" if isinstance(given, str | int | float) else ""
    return bad_request(field, f"{err['msg']}{shown}")


def unavailable(detail: str) -> OversightProblem:
    return OversightProblem(503, "Audit store unavailable", detail,
                            headers={"Retry-After": "5"})
