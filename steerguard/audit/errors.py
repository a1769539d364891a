"""Errors of the audit package; each names the setting, key or record it is about."""

from steerguard.errors import SteerguardError


class AuditError(SteerguardError):
    """Base class for audit errors."""


class AuditConfigError(AuditError):
    """An audit setting is missing or invalid."""


class AuditUnavailableError(AuditError):
    """The audit log cannot take a record now; raised by the `refuse` and `block` policies."""


class MaskingError(AuditError):
    """A masking rule failed on a text; the record that carried it is dropped, never written raw."""
