"""The policy bundle schema: the single source of truth for what a policy file may say.

`BundleSpec.model_json_schema()` is what `steerguard policy schema` prints. Checks that need
the whole bundle (unknown vector, duplicate rule id, ...) live in `checks.py`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)

from steerguard.policy import conditions
from steerguard.policy.specbase import (
    ID_PATTERN,
    MAX_LAYER,
    FieldSpec,
    Layers,
    Name,
    PositionsText,
    Spec,
)
from steerguard.runtime.plan import Operation


def _number_or_mapping(tag: str) -> Any:
    # A tagged union reports one error for a wrong value, not one per member.
    return lambda v: tag if isinstance(v, dict | BaseModel) else "number"


# ---------------------------------------------------------------- vectors, fields, limits


class VectorSpec(Spec):
    """A name rules use, bound to a vector in the library and its defaults."""

    concept: Name | None = Field(
        default=None, description="Vector name in the library; defaults to this entry's key."
    )
    hash: str | None = Field(
        default=None, description="Pinned content hash; the loader checks it when it can."
    )
    layers: Layers
    strength: float = Field(description="Default strength, relative to the layer's norm.")
    op: Operation = Operation.ADD
    positions: PositionsText = Field(default="all", validate_default=True)
    max_strength: float = Field(
        default=1.0, gt=0, description="No rule may apply this vector beyond +/- this."
    )
    description: str = ""



class ActivationSpec(Spec):
    """A condition read from the model's own prompt activations (a calibrated probe)."""

    layer: int | None = Field(
        default=None, ge=0, le=MAX_LAYER, description="Decoder layer whose output the probe reads."
    )
    layers: Layers | None = Field(
        default=None,
        description="Or several layers read together (a list or 'a-b'): the probe averages "
        "their standardised projections; the decision waits for the last of them.",
    )
    dataset: str | None = Field(
        default=None,
        description="Folder with train.jsonl / eval.jsonl ({text, label}), relative to the "
        "bundle; used to calibrate the direction and threshold.",
    )
    pooling: Literal["last"] = Field(
        default="last", description="Which prompt position is scored: the last token."
    )
    description: str = ""

    @model_validator(mode="after")
    def _one_reading(self) -> ActivationSpec:
        if (self.layer is None) == (self.layers is None):
            raise ValueError("give exactly one of `layer` (one layer) or `layers` (several)")
        return self

    @property
    def read_layers(self) -> tuple[int, ...]:
        """The layers the probe reads, ascending."""
        return (self.layer,) if self.layer is not None else tuple(sorted(self.layers or ()))


class Limits(Spec):
    max_total_strength: float = Field(
        default=1.0, gt=0, description="Per layer: sum of |strength| over all vectors."
    )
    max_vectors: int = Field(default=4, ge=1, description="Distinct vectors per request.")


# ---------------------------------------------------------------- conditions

# The kinds registered in steerguard.policy.conditions, one module each.
Condition = conditions.condition_union()


# ---------------------------------------------------------------- rules


class StrengthFrom(Spec):
    """strength = clamp(offset + scale * value_of_field, min, max)."""

    from_: str = Field(alias="from", description="A declared numeric profile field.")
    scale: float = 1.0
    offset: float = 0.0
    min: float
    max: float
    default: float | None = Field(
        default=None,
        description="Used when the profile lacks the field; otherwise the vector is skipped.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> StrengthFrom:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        if self.default is not None and not self.min <= self.default <= self.max:
            raise ValueError(f"default {self.default} is outside [{self.min}, {self.max}]")
        return self


class ApplySpec(Spec):
    vector: str
    strength: (
        Annotated[
            Annotated[float, Tag("number")] | Annotated[StrengthFrom, Tag("from")],
            Discriminator(_number_or_mapping("from")),
        ]
        | None
    ) = Field(
        default=None, description="A number, or taken from a profile field; default: the vector's."
    )
    layers: Layers | None = None
    op: Operation | None = None
    positions: PositionsText | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"vector": value} if isinstance(value, str) else value



class RuleSpec(Spec):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    description: str = ""
    priority: int = Field(default=0, description="Higher wins; ties are broken by id.")
    when: Condition
    apply: list[ApplySpec] = Field(default_factory=list)
    deny: list[str] = Field(
        default_factory=list,
        description="Vector names that must not be applied when this rule matches.",
    )
    group: str | None = Field(
        default=None, description="Exclusive group: only the top rule of a group survives."
    )


# ---------------------------------------------------------------- the bundle


class BundleSpec(Spec):
    """One policy bundle: `bundle.yaml` in a folder, or a single YAML file."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        coerce_numbers_to_str=True,
        allow_inf_nan=False,
    )

    name: Annotated[str, Field(pattern=ID_PATTERN)]
    revision: str = Field(min_length=1)
    description: str = ""
    on_error: Literal["open", "closed"] = Field(
        default="closed",
        description="When a predicate cannot be evaluated: open ignores it, closed returns a "
        "failed-closed decision with an empty plan.",
    )
    limits: Limits = Limits()
    concepts: str | None = Field(
        default=None,
        description="Folder of concept datasets, relative to the bundle: a vector without "
        "strength or layers takes its concept's recommended_strength / default_layers.",
    )
    vectors: dict[Name, VectorSpec] = Field(min_length=1)
    profile: dict[str, FieldSpec] = Field(default_factory=dict)
    context: dict[str, FieldSpec] = Field(default_factory=dict)
    activations: dict[Name, ActivationSpec] = Field(default_factory=dict)
    rules: list[RuleSpec] = Field(default_factory=list)


for _kind in conditions.kinds().values():  # kinds whose payload holds conditions
    _kind.model.model_rebuild(_types_namespace={"Condition": Condition})
RuleSpec.model_rebuild()
BundleSpec.model_rebuild()
