"""Identity of the model a vector belongs to."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ModelFingerprint(BaseModel):
    """Enough of a model's shape and origin to refuse vectors built for another model."""

    model_config = ConfigDict(frozen=True)

    model_id: str
    architecture: str
    model_type: str = ""
    hidden_size: int
    num_layers: int

    def mismatch(self, other: ModelFingerprint) -> str | None:
        """Describe how `other` differs from this fingerprint, or None when they agree."""
        for field in ("architecture", "model_type", "hidden_size", "num_layers", "model_id"):
            mine, theirs = getattr(self, field), getattr(other, field)
            if mine != theirs:
                return f"{field} is {theirs!r}, the model has {mine!r}"
        return None
