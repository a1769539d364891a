"""What a request carries to the vLLM workers: `SamplingParams.extra_args["steerguard"]`.

The sender resolves everything the workers would otherwise have to look up: each intervention
names its vector by content hash and carries its absolute coefficient per layer (strength times
the layer's typical hidden-state norm), so the workers need neither the vector names nor the
layer norms. The OpenAI server fills `extra_args` from the request's `vllm_xargs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from steerguard.canonical import digest
from steerguard.directions.vector import SteeringVector
from steerguard.errors import PlanError
from steerguard.runtime.plan import Intervention, Operation, Positions, SteeringPlan

EXTRA_ARGS_KEY = "steerguard"
WIRE_VERSION = 1

_HASH = r"^[0-9a-f]{16}$"


class WireIntervention(BaseModel):
    """One intervention as the workers apply it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vector_hash: Annotated[str, Field(pattern=_HASH)]
    coefficients: dict[int, float] = Field(
        min_length=1, description="Layer -> strength * n_l (clamp: the target component)."
    )
    op: Operation = Operation.ADD
    positions: Positions = Positions()

    @model_validator(mode="after")
    def _check(self) -> WireIntervention:
        for layer, value in self.coefficients.items():
            if layer < 0:
                raise ValueError(f"layer {layer} must be >= 0")
            if value != value or abs(value) == float("inf"):
                raise ValueError(f"coefficient {value} at layer {layer} is not finite")
        return self


class Read(BaseModel):
    """Hidden states to send back: the layer outputs (before that layer's steering) at prompt
    `positions` (None: every prompt position), whole (`state`) or as their L2 norms (`norm`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layers: tuple[Annotated[int, Field(ge=0)], ...] = Field(min_length=1)
    positions: tuple[Annotated[int, Field(ge=0)], ...] | None = None
    kind: Literal["state", "norm"] = "state"


class WirePlan(BaseModel):
    """The `extra_args["steerguard"]` payload of one request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = WIRE_VERSION
    interventions: tuple[WireIntervention, ...] = ()
    reads: tuple[Read, ...] = ()
    report: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None,
        description="Key under which the workers keep measurements and reads for the "
        "sender to take (VllmBackend does); None keeps nothing.",
    )
    full_prefill: bool = Field(
        default=False,
        description="Compute every prompt position, reusing no cached prefix (blocks steered "
        "the same way), so that measurements cover the whole prompt as on the hf backend.",
    )

    @model_validator(mode="after")
    def _reads_need_a_key(self) -> WirePlan:
        if self.reads and self.report is None:
            raise ValueError("reads need a report key to be sent back under")
        return self

    @property
    def steers(self) -> bool:
        return bool(self.interventions)

    def cache_salt(self) -> str | None:
        """Prefix-cache salt: requests share cached blocks only with requests steered the
        same way (None: unsteered, the unsalted cache)."""
        if not self.interventions:
            return None
        return "steerguard:" + digest([i.model_dump(mode="json") for i in self.interventions])

    @property
    def skips_prefix_cache(self) -> bool:
        """A request that reads prompt positions must compute them all: a prefix cache hit
        would skip the positions it reads."""
        return bool(self.reads) or self.full_prefill

    @classmethod
    def from_extra_args(cls, extra_args: Mapping[str, object] | None) -> WirePlan | None:
        """The payload of `extra_args`, validated; None when there is none."""
        if not extra_args or EXTRA_ARGS_KEY not in extra_args:
            return None
        return cls.model_validate(extra_args[EXTRA_ARGS_KEY])

    def extra_args(self) -> dict[str, object]:
        return {EXTRA_ARGS_KEY: self.model_dump(mode="json", exclude_defaults=True)}


def wire_plan(
    plan: SteeringPlan,
    vectors: Mapping[str, SteeringVector],
    layer_norms: torch.Tensor,
    *,
    reads: Sequence[Read] = (),
    report: str | None = None,
    full_prefill: bool = False,
) -> WirePlan:
    """Resolve `plan` against the sender's vectors and layer norms (as SteeringProgram does)."""
    return WirePlan(
        interventions=tuple(
            wire_intervention(iv, vectors, layer_norms) for iv in plan.interventions
        ),
        reads=tuple(reads),
        report=report,
        full_prefill=full_prefill,
    )


def wire_intervention(
    iv: Intervention, vectors: Mapping[str, SteeringVector], layer_norms: torch.Tensor
) -> WireIntervention:
    vector = vectors.get(iv.vector)
    if vector is None:
        known = ", ".join(sorted(vectors)) or "none"
        raise PlanError(f"plan names vector {iv.vector!r}, which is not loaded (loaded: {known})")
    if iv.vector_hash is not None and vector.content_hash() != iv.vector_hash:
        raise PlanError(
            f"plan pins vector {iv.vector!r} to hash {iv.vector_hash}, the loaded one is "
            f"{vector.content_hash()}"
        )
    missing = [layer for layer in iv.layers if layer not in vector.directions]
    if missing:
        raise PlanError(
            f"vector {iv.vector!r} has no direction for layers {missing}; "
            f"it has layers {vector.layers}"
        )
    if any(layer >= len(layer_norms) for layer in iv.layers):
        raise PlanError(f"layers {list(iv.layers)} out of range 0..{len(layer_norms) - 1}")
    return WireIntervention(
        vector_hash=vector.content_hash(),
        coefficients={
            layer: iv.strength * float(layer_norms[layer]) for layer in iv.layers
        },
        op=iv.op,
        positions=iv.positions,
    )
