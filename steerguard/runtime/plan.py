"""What to steer: interventions and the immutable plan that groups them."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from steerguard.canonical import digest


class Operation(StrEnum):
    """How an intervention changes the hidden state h along the unit direction d.

    add:    h + s * n_l * d            (n_l = the layer's typical hidden-state norm)
    ablate: h - (h . d) d              (strength is ignored)
    clamp:  h + (s * n_l - h . d) d    (sets the component along d to the target s * n_l)
    """

    ADD = "add"
    ABLATE = "ablate"
    CLAMP = "clamp"


class PositionScope(StrEnum):
    """Which token positions an intervention touches.

    all:       every prompt and generated position
    prompt:    prompt positions only (the prefill)
    generated: positions of generated tokens only (decoding steps)
    last_n:    the last n prompt positions
    """

    ALL = "all"
    PROMPT = "prompt"
    GENERATED = "generated"
    LAST_N = "last_n"


class Positions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: PositionScope = PositionScope.ALL
    n: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _n_only_for_last_n(self) -> Positions:
        if self.scope is PositionScope.LAST_N and self.n is None:
            raise ValueError("positions scope 'last_n' needs n >= 1")
        if self.scope is not PositionScope.LAST_N and self.n is not None:
            raise ValueError(f"positions scope {self.scope.value!r} takes no n")
        return self

    def __str__(self) -> str:
        return f"last_{self.n}" if self.scope is PositionScope.LAST_N else self.scope.value

    @classmethod
    def parse(cls, text: str) -> Positions:
        """Read 'all', 'prompt', 'generated' or 'last_N'."""
        if text.startswith("last_"):
            return cls(scope=PositionScope.LAST_N, n=int(text.removeprefix("last_")))
        return cls(scope=PositionScope(text))


class Intervention(BaseModel):
    """One vector applied at some layers with one strength, operation and position scope.

    `strength` is relative to each layer's typical hidden-state norm, so 0.1 adds a vector of
    a tenth of the usual activation size at every layer it touches.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    vector: str = Field(description="Name of the steering vector in the engine's library.")
    vector_hash: str | None = Field(
        default=None, description="Content hash the vector must have; None accepts any."
    )
    layers: tuple[int, ...] = Field(min_length=1)
    strength: float = 0.0
    op: Operation = Operation.ADD
    positions: Positions = Positions()
    source: str | None = Field(default=None, description="Policy rule that asked for it.")

    @model_validator(mode="after")
    def _check(self) -> Intervention:
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers {list(self.layers)} repeat a layer")
        if any(layer < 0 for layer in self.layers):
            raise ValueError(f"layers {list(self.layers)} must be >= 0")
        if self.strength != self.strength or abs(self.strength) == float("inf"):
            raise ValueError(f"strength {self.strength} is not a finite number")
        return self

    @property
    def is_noop(self) -> bool:
        return self.op is Operation.ADD and self.strength == 0.0


class SteeringPlan(BaseModel):
    """An immutable, ordered set of interventions for one generation (one batch row)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interventions: tuple[Intervention, ...] = ()
    revision: str | None = Field(
        default=None, exclude=True,
        description="The policy revision that decided this plan (name@revision:hash), so "
        "whoever steers, audits or answers with it can tell; not part of the content hash.",
    )

    @classmethod
    def empty(cls) -> SteeringPlan:
        return cls()

    @classmethod
    def single(
        cls,
        vector: str,
        strength: float,
        layers: list[int] | tuple[int, ...],
        op: Operation | Literal["add", "ablate", "clamp"] = Operation.ADD,
        positions: str = "all",
    ) -> SteeringPlan:
        return cls(
            interventions=(
                Intervention(
                    vector=vector,
                    strength=strength,
                    layers=tuple(layers),
                    op=Operation(op),
                    positions=Positions.parse(positions),
                ),
            )
        )

    @property
    def is_empty(self) -> bool:
        return all(i.is_noop for i in self.interventions)

    def content_hash(self) -> str:
        """The digest of the plan's canonical JSON (steerguard/canonical.py). The serializer
        gives model_dump(mode="json")'s values without its argument handling (0.5 us)."""
        return digest(self.__pydantic_serializer__.to_python(self, mode="json"))

    def summary(self) -> list[dict[str, object]]:
        """A compact, JSON-friendly view for logs and response metadata."""
        return [
            {
                "vector": i.vector,
                "strength": i.strength,
                "layers": list(i.layers),
                "op": i.op.value,
                "positions": str(i.positions),
            }
            for i in self.interventions
        ]

