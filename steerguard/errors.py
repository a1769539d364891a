"""Errors a user can act on. Each names the file, field or value and what was expected."""


class SteerguardError(Exception):
    """Base class for errors caused by input a user controls."""


class ModelLoadError(SteerguardError):
    """A model could not be found or loaded."""


class VectorError(SteerguardError):
    """A steering vector is malformed or does not fit the model."""


class PlanError(SteerguardError):
    """A steering plan cannot be applied to the model."""
