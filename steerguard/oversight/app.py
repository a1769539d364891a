"""The oversight routers on an app of their own: `steerguard audit dashboard`, an auditors'
server apart from the model server (run it with the `reader` credentials). `steerguard
serve` mounts the same routers on its own app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, RedirectResponse

from steerguard.oversight import Oversight
from steerguard.server.errors import install_handlers
from steerguard.server.keys import KeyRing


def create_app(oversight: Oversight, keys: KeyRing | None = None) -> FastAPI:
    """`keys`: what the server's scope dependency checks, when the routers use it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        oversight.close()

    app = FastAPI(title="steerguard oversight", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.keys = keys if keys is not None else KeyRing()
    install_handlers(app)
    for router in oversight.routers():
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/dashboard/", 303)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app
