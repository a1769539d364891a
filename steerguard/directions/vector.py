"""A steering vector: a named direction per layer, made for one model, versioned by content."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from steerguard.canonical import digest
from steerguard.directions.fingerprint import ModelFingerprint, fit_problem
from steerguard.errors import VectorError


class ExtractionInfo(BaseModel):
    """How a vector was made, so that it can be rebuilt and compared."""

    model_config = ConfigDict(frozen=True)

    method: str = Field(description="mean_diff, pca_diff, or imported:<format>")
    pooling: str | None = None
    dataset: str | None = None
    dataset_hash: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    layer_scores: dict[int, float] = Field(
        default_factory=dict, description="Held-out pair separation (0..1) per layer."
    )
    layer_effects: dict[int, float] = Field(
        default_factory=dict, description="Held-out paired effect size (mean gap / std)."
    )
    recommended_layers: tuple[int, ...] = ()


class SteeringVector(BaseModel):
    """Per-layer directions (raw, not normalised) for one concept and one model.

    The content hash covers the name, the fingerprint, the extraction info and the tensor
    bytes; it is the vector's version, and policies pin it.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    fingerprint: ModelFingerprint
    directions: dict[int, torch.Tensor]
    extraction: ExtractionInfo
    description: str = ""
    _hash: str | None = PrivateAttr(default=None)  # computed once: the model is frozen

    @model_validator(mode="after")
    def _check_tensors(self) -> SteeringVector:
        if not self.directions:
            raise VectorError(f"vector {self.name!r} has no layers")
        for layer, t in self.directions.items():
            where = f"vector {self.name!r}, layer {layer}"
            if not 0 <= layer < self.fingerprint.num_layers:
                raise VectorError(
                    f"{where}: layer out of range 0..{self.fingerprint.num_layers - 1}"
                )
            if t.ndim != 1 or t.shape[0] != self.fingerprint.hidden_size:
                raise VectorError(
                    f"{where}: expected shape ({self.fingerprint.hidden_size},), "
                    f"got {tuple(t.shape)}"
                )
            if not torch.isfinite(t).all():
                raise VectorError(f"{where}: holds NaN or Inf values")
            if float(t.norm()) == 0.0:
                raise VectorError(f"{where}: direction is all zeros")
        return self

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    def unit(self, layer: int) -> torch.Tensor:
        t = self.directions[layer].float()
        return t / t.norm()

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "fingerprint": self.fingerprint.model_dump(),
            "extraction": self.extraction.model_dump(mode="json"),
        }

    def content_hash(self) -> str:
        if self._hash is None:
            self._hash = self._compute_hash()
        return self._hash

    def _compute_hash(self) -> str:
        return digest(self.metadata(), *self.tensor_bytes(), size=16)

    def tensor_bytes(self) -> list[bytes]:
        """Per layer, ascending: its index (4 bytes, little-endian) and its float32 values."""
        out = []
        for layer in self.layers:
            out.append(layer.to_bytes(4, "little"))
            out.append(
                self.directions[layer].detach().to(torch.float32).contiguous().numpy().tobytes()
            )
        return out

    def check_fits(self, fingerprint: ModelFingerprint) -> None:
        """Raise VectorError when this vector was made for a different model."""
        problem = fit_problem(fingerprint, made_for=self.fingerprint,
                              width=self.fingerprint.hidden_size, layers=self.layers)
        if problem is not None:
            raise VectorError(f"vector {self.name!r} does not fit this model: {problem}")
