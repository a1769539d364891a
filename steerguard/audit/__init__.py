"""Audit log: every steering decision and intervention, recorded in Redis, tamper-evident."""

from steerguard.audit.config import AuditConfig, MaskRule
from steerguard.audit.errors import (
    AuditConfigError,
    AuditError,
    AuditUnavailableError,
    MaskingError,
)
from steerguard.audit.log import AuditLog
from steerguard.audit.records import DecisionRecord, InterventionRecord, Outcome
from steerguard.audit.store import AuditStore, Page, Stats
from steerguard.audit.verify import Problem, VerifyReport
from steerguard.audit.writer import AuditCounters

__all__ = [
    "AuditConfig", "AuditConfigError", "AuditCounters", "AuditError", "AuditLog", "AuditStore",
    "AuditUnavailableError", "DecisionRecord", "InterventionRecord", "MaskRule", "MaskingError",
    "Outcome", "Page", "Problem", "Stats", "VerifyReport",
]
