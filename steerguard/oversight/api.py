"""The read-only audit API (`/v1/audit/...`, scope `audit:read`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import StreamingResponse

from steerguard.oversight.access import SCOPE, Access, Principal
from steerguard.oversight.params import ExportQuery, RecordFilters, StatsQuery, TimeRange
from steerguard.oversight.routing import ProblemRoute, parse_query, query_doc
from steerguard.oversight.service import OversightService

PrincipalDep = Callable[..., Principal]
_DECISION_ID = Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")


def json_response(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def export_response(service: OversightService, q: ExportQuery) -> StreamingResponse:
    body = service.export(q, q.format)
    since, until = q.bounded(service.limits.max_range_days)
    name = (f"audit-{service.prefix}-{since.strftime('%Y%m%dT%H%M')}-"
            f"{until.strftime('%Y%m%dT%H%M')}.{q.format}")
    media = "application/x-ndjson" if q.format == "jsonl" else "text/csv; charset=utf-8"
    return StreamingResponse(body, media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


def audit_router(service: OversightService, access: Access,
                 scope_dependency: PrincipalDep | None = None) -> APIRouter:
    """`scope_dependency`: the server's own check of `audit:read` (its keys); else the
    keys of `access`."""

    def principal(request: Request) -> Principal:
        return access.api(request, SCOPE)

    router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=ProblemRoute,
                       dependencies=[Depends(scope_dependency or principal)])

    @router.get("/records", openapi_extra=query_doc(RecordFilters),
                summary="Records matching every filter, oldest first, by cursor")
    def records(request: Request) -> Response:
        f = parse_query(RecordFilters, request)
        page = service.records(f)
        return json_response({"records": [r.model_dump(mode="json") for r in page.records],
                              "next_cursor": page.cursor})

    @router.get("/decisions/{decision_id}", summary="A decision with its interventions")
    def decision(decision_id: Annotated[str, _DECISION_ID]) -> Response:
        view = service.decision(decision_id)
        return json_response(view.model_dump(mode="json"))

    @router.get("/stats", openapi_extra=query_doc(StatsQuery),
                summary="Counts per outcome, rule and vector per hour or day")
    def stats(request: Request) -> Response:
        return json_response(service.stats(parse_query(StatsQuery, request))
                             .model_dump(mode="json"))

    @router.get("/verify", openapi_extra=query_doc(TimeRange),
                summary="The chain verdict for a range and the last audit watch pass")
    def verify(request: Request) -> Response:
        return json_response(service.verify_range(parse_query(TimeRange, request))
                             .model_dump(mode="json"))

    @router.get("/export", openapi_extra=query_doc(ExportQuery),
                summary="Records of a range, streamed: JSONL as stored, or CSV")
    def export(request: Request) -> StreamingResponse:
        return export_response(service, parse_query(ExportQuery, request))

    return router
