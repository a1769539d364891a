"""Oversight for people: the read-only audit API (`/v1/audit/...`) and the dashboard
(`/dashboard/`), FastAPI routers over an AuditStore.

    oversight = Oversight(AuditStore.from_config(), keys=server_keys)
    for router in oversight.routers():
        app.include_router(router)
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from steerguard.audit.store import AuditStore
from steerguard.oversight.access import SCOPE, Access, KeyChecker, Principal
from steerguard.oversight.api import PrincipalDep, audit_router
from steerguard.oversight.dashboard import dashboard_router
from steerguard.oversight.params import Limits
from steerguard.oversight.service import OversightService


class Oversight:
    """The service, its access rules and its two routers; close() stops the background
    chain check and closes the store."""

    def __init__(self, store: AuditStore, *, keys: KeyChecker | None = None,
                 limits: Limits | None = None, verify_interval_s: float | None = 10.0,
                 full_verify_interval_s: float = 3600.0,
                 watch_checkpoint: Path | None = None,
                 scope_dependency: PrincipalDep | None = None, close_store: bool = True
                 ) -> None:
        self.store = store
        self.service = OversightService(store, limits=limits,
                                        verify_interval_s=verify_interval_s,
                                        full_verify_interval_s=full_verify_interval_s,
                                        watch_checkpoint=watch_checkpoint)
        self.access = Access(keys)
        self._scope_dependency = scope_dependency
        self._close_store = close_store

    def routers(self) -> list[APIRouter]:
        return [audit_router(self.service, self.access, self._scope_dependency),
                dashboard_router(self.service, self.access)]

    def close(self) -> None:
        self.service.close()
        if self._close_store:
            self.store.close()


__all__ = ["SCOPE", "Access", "KeyChecker", "Oversight", "OversightService",
           "Principal"]
