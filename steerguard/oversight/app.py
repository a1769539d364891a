"""The oversight routers on an app of their own, for an auditors' server that runs apart
from the model server (with the `reader` credentials): `steerguard audit dashboard`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from steerguard.oversight import Oversight
from steerguard.oversight.problems import OversightProblem, bad_request


def create_app(oversight: Oversight) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        oversight.close()

    app = FastAPI(title="steerguard oversight", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    for router in oversight.routers():
        app.include_router(router)

    @app.exception_handler(HTTPException)
    async def http_problem(request: Request, exc: HTTPException) -> Response:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        detail = f"{request.method} {request.url.path}: {exc.detail}"
        return OversightProblem(exc.status_code, title, detail).response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        err = exc.errors()[0]
        return bad_request(".".join(str(x) for x in err["loc"][1:]) or "request",
                           str(err["msg"])).response()

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/", 303)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        return JSONResponse({"ok": True})

    return app
