"""Route plumbing shared by the API and the dashboard: problems become responses at the
route (no app-wide handler needed), query strings are validated by pydantic models, and
the OpenAPI document lists those models' fields as parameters."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from steerguard.oversight.problems import OversightProblem, bad_request, from_validation

M = TypeVar("M", bound=BaseModel)
# Headers every oversight response carries: pages run only the dashboard's own scripts,
# never inline ones, so text from a record cannot execute even if it escaped escaping.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class ProblemRoute(APIRoute):
    """An APIRoute whose OversightProblem (from a dependency or the endpoint) is answered
    as problem+json, and whose responses carry SECURITY_HEADERS."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                response = await handler(request)
            except OversightProblem as problem:
                response = problem.response()
            except RequestValidationError as exc:
                err = exc.errors()[0] if exc.errors() else {"loc": ("request",), "msg": "?"}
                where = ".".join(str(x) for x in err["loc"][1:]) or str(err["loc"][0])
                response = bad_request(where, str(err["msg"])).response()
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return run


def parse_query(model: type[M], request: Request, **fixed: Any) -> M:
    """The query string as `model` (each parameter once; unknown ones refused by name)."""
    values: dict[str, Any] = {}
    for name, value in request.query_params.multi_items():
        if name in values:
            raise bad_request(name, "given more than once; give it once")
        values[name] = value
    values.update(fixed)
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise from_validation(exc) from None


def query_doc(model: type[BaseModel], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """`openapi_extra` listing the model's fields as query parameters."""
    schema = model.model_json_schema()
    params = [
        {"name": name, "in": "query", "required": False, "schema": prop}
        for name, prop in schema.get("properties", {}).items() if name not in skip
    ]
    return {"parameters": params}
