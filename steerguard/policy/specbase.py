"""Types that the bundle schema and the condition kinds share: the spec base class, names,
layer lists and field declarations. Nothing here knows about conditions or bundles."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from steerguard.runtime.plan import Positions

Scalar = str | int | float | bool
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
NAME = re.compile(ID_PATTERN)
MAX_LAYER = 1023  # the highest layer index a bundle may name (a bound, not a model's size)


def _plain_name(value: str) -> str:
    if not NAME.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a plain name: letters, digits, '_', '.' and "
                         "'-', starting with a letter or digit (it names files)")
    return value


# Names that become file names (library vectors, probes/<condition>.json): no path in them.
Name = Annotated[str, AfterValidator(_plain_name), Field(json_schema_extra={"pattern": ID_PATTERN})]


def check_bounds(low: float | None, high: float | None, needed_by: str | None = None) -> None:
    """A min/max pair: min <= max where both are given; with `needed_by` (the kind that
    needs bounds), at least one of them."""
    if needed_by is not None and low is None and high is None:
        raise ValueError(f"{needed_by} needs min, max or both")
    if low is not None and high is not None and low > high:
        raise ValueError(f"min {low} is greater than max {high}")


class Spec(BaseModel):
    """Base of every policy-file model: unknown keys, NaN and Inf are refused."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )


class Bounds(Spec):
    """A `{min, max}` payload: at least one bound, min <= max. A subclass names the kind in
    the error (`NEEDED_BY`) and may narrow the two fields."""

    NEEDED_BY: ClassVar[str]
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        check_bounds(self.min, self.max, needed_by=self.NEEDED_BY)
        return self


def _parse_layers(value: Any) -> Any:
    """Accept [8, 9, 10] or the range string '8-14' (inclusive)."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d{1,9})\s*-\s*(\d{1,9})\s*", value)
        if not m:
            raise ValueError(f"layers {value!r}: expected a list of ints or a range 'a-b'")
        low, high = int(m[1]), int(m[2])
        if low > high:
            raise ValueError(f"layers {value!r}: the range is reversed; expected 'a-b' with "
                             f"a <= b, e.g. '{high}-{low}'")
        if high > MAX_LAYER:
            raise ValueError(f"layers {value!r}: layer {high} is beyond {MAX_LAYER}")
        return list(range(low, high + 1))
    return value


def _check_layers(layers: tuple[int, ...] | None) -> tuple[int, ...] | None:
    if layers is not None:
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers {list(layers)} repeat a layer")
        if any(not 0 <= x <= MAX_LAYER for x in layers):
            raise ValueError(f"layers {list(layers)} must be within 0..{MAX_LAYER}")
    return layers


# A list of layer indexes or the range string 'a-b'.
Layers = Annotated[
    tuple[int, ...],
    BeforeValidator(_parse_layers),
    AfterValidator(_check_layers),
    Field(min_length=1),
]

def _parse_positions(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return Positions.parse(value)
        except ValueError as e:
            raise ValueError(
                f"positions {value!r}: expected all, prompt, generated or last_N (N >= 1)"
            ) from e
    return value


# Written 'all', 'prompt', 'generated' or 'last_N' in a file; typed from there on.
PositionsText = Annotated[
    Positions,
    BeforeValidator(_parse_positions),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"title": "Positions", "type": "string",
                    "pattern": r"^(all|prompt|generated|last_[1-9][0-9]*)$"}),
]

FieldType = Literal["string", "number", "integer", "boolean", "enum", "list"]


class FieldSpec(Spec):
    """A profile or context field that rules may read."""

    type: FieldType
    values: list[Scalar] | None = Field(
        default=None, description="Allowed values (required for enum; optional for list/string)."
    )
    min: float | None = None
    max: float | None = None
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if self.type == "enum" and not self.values:
            raise ValueError("type 'enum' needs a non-empty 'values' list")
        if self.values is not None and self.type in ("number", "integer", "boolean"):
            raise ValueError(f"type {self.type!r} takes no 'values'; use min/max")
        if (self.min is not None or self.max is not None) and self.type not in (
            "number",
            "integer",
        ):
            raise ValueError(f"min/max only apply to number or integer, not {self.type!r}")
        check_bounds(self.min, self.max)
        return self
