"""The policy bundle schema: the single source of truth for what a policy file may say.

`BundleSpec.model_json_schema()` is what `steerguard policy schema` prints. Checks that need
the whole bundle (unknown vector, duplicate rule id, ...) live in `checks.py`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from steerguard.runtime.plan import Operation, Positions

Scalar = str | int | float | bool
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
NAME = re.compile(_ID)


def _plain_name(value: str) -> str:
    if not NAME.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a plain name: letters, digits, '_', '.' and "
                         "'-', starting with a letter or digit (it names files)")
    return value


# Names that become file names (library vectors, probes/<condition>.json): no path in them.
Name = Annotated[str, AfterValidator(_plain_name), Field(json_schema_extra={"pattern": _ID})]
MAX_LAYER = 1023  # the highest layer index a bundle may name (a bound, not a model's size)


class _Spec(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )


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


def _check_positions(value: str | None) -> str | None:
    if value is not None:
        try:
            Positions.parse(value)
        except ValueError as e:
            raise ValueError(
                f"positions {value!r}: expected all, prompt, generated or last_N (N >= 1)"
            ) from e
    return value


def _number_or_mapping(tag: str) -> Any:
    # A tagged union reports one error for a wrong value, not one per member.
    return lambda v: tag if isinstance(v, dict | BaseModel) else "number"


def _auto_or_number(value: Any) -> str:
    return "auto" if isinstance(value, str) else "number"


# A list of layer indexes or the range string 'a-b'.
Layers = Annotated[
    tuple[int, ...],
    BeforeValidator(_parse_layers),
    AfterValidator(_check_layers),
    Field(min_length=1),
]


# ---------------------------------------------------------------- vectors, fields, limits


class VectorSpec(_Spec):
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
    positions: str = "all"
    max_strength: float = Field(
        default=1.0, gt=0, description="No rule may apply this vector beyond +/- this."
    )
    description: str = ""

    _pos = field_validator("positions")(_check_positions)


FieldType = Literal["string", "number", "integer", "boolean", "enum", "list"]


class FieldSpec(_Spec):
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
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class ActivationSpec(_Spec):
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


class Limits(_Spec):
    max_total_strength: float = Field(
        default=1.0, gt=0, description="Per layer: sum of |strength| over all vectors."
    )
    max_vectors: int = Field(default=4, ge=1, description="Distinct vectors per request.")


# ---------------------------------------------------------------- conditions

TextIn = Literal["user", "system", "turns", "tool_result"]


class _TextSource(_Spec):
    in_: TextIn = Field(
        default="user",
        alias="in",
        description="user: latest user message; system: system prompt; turns: the last N "
        "non-system messages; tool_result: the last tool result.",
    )
    last: int | None = Field(default=None, ge=1, description="N for in: turns.")

    @model_validator(mode="after")
    def _last_for_turns(self) -> _TextSource:
        if self.in_ == "turns" and self.last is None:
            raise ValueError("in: turns needs 'last' (how many turns)")
        if self.in_ != "turns" and self.last is not None:
            raise ValueError(f"'last' only applies to in: turns, not in: {self.in_}")
        return self


class KeywordsSpec(_TextSource):
    words: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)


class RegexSpec(_TextSource):
    pattern: str
    ignore_case: bool = True


class TurnsSpec(_Spec):
    """Number of user turns so far."""

    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> TurnsSpec:
        if self.min is None and self.max is None:
            raise ValueError("turns needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class ToolSpec(_Spec):
    """All given parts must hold."""

    requested: list[str] | None = Field(
        default=None, description="Any of these tools is among the calls just requested."
    )
    last_tool: list[str] | None = Field(
        default=None, description="The last result came from one of these tools."
    )
    last_failed: bool | None = Field(
        default=None, description="The last tool call failed (true) or succeeded (false)."
    )

    @model_validator(mode="after")
    def _some(self) -> ToolSpec:
        if self.requested is None and self.last_tool is None and self.last_failed is None:
            raise ValueError("tool needs requested, last_tool or last_failed")
        return self


class RangeSpec(_Spec):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> RangeSpec:
        if self.min is None and self.max is None:
            raise ValueError("range needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class FieldPredicate(_Spec):
    """Exactly one of equals / in / range / exists over a declared field."""

    field: str
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    range: RangeSpec | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _one_op(self) -> FieldPredicate:
        ops = [k for k in ("equals", "in_", "range", "exists") if getattr(self, k) is not None]
        if len(ops) != 1:
            raise ValueError("needs exactly one of equals, in, range, exists")
        return self

    @property
    def op(self) -> str:
        for k in ("equals", "in_", "range", "exists"):
            if getattr(self, k) is not None:
                return k.rstrip("_")
        raise AssertionError("validated to have one op")


class ActivationPredicate(_Spec):
    condition: str = Field(description="A name declared under `activations`.")
    threshold: Annotated[
        Annotated[Literal["auto"], Tag("auto")]
        | Annotated[float, Field(gt=0, lt=1), Tag("number")],
        Discriminator(_auto_or_number),
    ] = Field(
        default="auto",
        description="Score (0..1, the probe's calibrated probability) at or above which the "
        "condition holds; auto = 0.5, the calibrated threshold.",
    )


class AllCond(_Spec):
    all: list[Condition]


class AnyCond(_Spec):
    any: list[Condition] = Field(min_length=1)


class NotCond(_Spec):
    not_: Condition = Field(alias="not")


class KeywordsCond(_Spec):
    keywords: KeywordsSpec


class RegexCond(_Spec):
    regex: RegexSpec


class TurnsCond(_Spec):
    turns: TurnsSpec


class ToolCond(_Spec):
    tool: ToolSpec


class ProfileCond(_Spec):
    profile: FieldPredicate


class ContextCond(_Spec):
    context: FieldPredicate


class ActivationCond(_Spec):
    activation: ActivationPredicate


CONDITION_KINDS = (
    "all",
    "any",
    "not",
    "keywords",
    "regex",
    "turns",
    "tool",
    "profile",
    "context",
    "activation",
)


def _condition_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        keys = list(value)
        return keys[0] if len(keys) == 1 and keys[0] in CONDITION_KINDS else None
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        return next((k for k in CONDITION_KINDS if k in fields or k + "_" in fields), None)
    return None


Condition = Annotated[
    Annotated[AllCond, Tag("all")]
    | Annotated[AnyCond, Tag("any")]
    | Annotated[NotCond, Tag("not")]
    | Annotated[KeywordsCond, Tag("keywords")]
    | Annotated[RegexCond, Tag("regex")]
    | Annotated[TurnsCond, Tag("turns")]
    | Annotated[ToolCond, Tag("tool")]
    | Annotated[ProfileCond, Tag("profile")]
    | Annotated[ContextCond, Tag("context")]
    | Annotated[ActivationCond, Tag("activation")],
    Discriminator(
        _condition_kind,
        custom_error_type="invalid_condition",
        custom_error_message="a condition is a mapping with exactly one key, one of: "
        + ", ".join(CONDITION_KINDS),
    ),
]


# ---------------------------------------------------------------- rules


class StrengthFrom(_Spec):
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


class ApplySpec(_Spec):
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
    positions: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, value: Any) -> Any:
        return {"vector": value} if isinstance(value, str) else value

    _pos = field_validator("positions")(_check_positions)


class RuleSpec(_Spec):
    id: Annotated[str, Field(pattern=_ID)]
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


class BundleSpec(_Spec):
    """One policy bundle: `bundle.yaml` in a folder, or a single YAML file."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        coerce_numbers_to_str=True,
        allow_inf_nan=False,
    )

    name: Annotated[str, Field(pattern=_ID)]
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


for _m in (AllCond, AnyCond, NotCond):
    _m.model_rebuild()
RuleSpec.model_rebuild()
BundleSpec.model_rebuild()
