"""What an intervention did, measured on the hidden states it touched."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from steerguard.runtime.plan import Intervention


class LayerMeasurement(BaseModel):
    """Measurements at one layer, averaged over the positions the intervention touched.

    Projections are onto the unit direction; `projection_after` is taken after every
    intervention at that layer has been applied.
    """

    model_config = ConfigDict(frozen=True)

    layer: int
    positions_affected: int
    delta_norm: float
    projection_before: float
    projection_after: float


class InterventionReport(BaseModel):
    """The measured effect of one intervention in one generation (one batch row)."""

    model_config = ConfigDict(frozen=True)

    index: int
    intervention: Intervention
    vector_hash: str
    coefficients: dict[int, float]
    layers: tuple[LayerMeasurement, ...]

    @property
    def positions_affected(self) -> int:
        return sum(m.positions_affected for m in self.layers)

    @property
    def mean_delta_norm(self) -> float:
        total = self.positions_affected
        if total == 0:
            return 0.0
        return sum(m.delta_norm * m.positions_affected for m in self.layers) / total
