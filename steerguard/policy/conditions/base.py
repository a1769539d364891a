"""What every condition kind is made of, and the registry the schema's union is built from.

A kind is one module of this package holding its pydantic model (a mapping with one key, the
kind's name), how it compiles into a `Node`, what it checks against the whole bundle, and
whether its evidence quotes conversation text (`Evidence.quote`, which the audit withholds or
masks). The module says `KINDS = (ConditionKind(...),)`; the package registers it on import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, Discriminator, Field, Tag, model_validator

from steerguard.policy.decision import Evidence
from steerguard.policy.errors import EvaluationError, PolicyIssue
from steerguard.policy.inputs import ToolState
from steerguard.policy.specbase import Spec

if TYPE_CHECKING:
    from steerguard.policy.schema import BundleSpec
    from steerguard.policy.yamlsource import Loc, YamlDoc


@dataclass
class EvalInput:
    """One request, prepared once so that every rule reads the same views."""

    user: list[tuple[str, str]]  # [(source, text)] for the latest user message, or []
    system: list[tuple[str, str]]
    turns: list[tuple[str, str]]  # all non-system messages, oldest first
    tool: ToolState
    user_turns: int
    profile: Mapping[str, Any]
    context: Mapping[str, Any]
    scores: Mapping[str, float] | None
    on_error: str = "closed"
    errors: list[str] = field(default_factory=list)

    def texts(self, where: str, last: int | None) -> list[tuple[str, str]]:
        if where == "user":
            return self.user
        if where == "system":
            return self.system
        if where == "turns":
            return self.turns[-(last or 1) :]
        r = self.tool.last_result
        return [(f"tool_result.{self.tool.last_tool}", r)] if r is not None else []


# A compiled condition: appends an Evidence for every predicate that held and contributed.
Node = Callable[[EvalInput, list[Evidence]], bool]
CompileChild = Callable[[Any], Node]


def guard(leaf: Node, label: str) -> Node:
    """A leaf that may raise EvaluationError: with `on_error: open` the error is recorded and
    the leaf does not hold; with `closed` it propagates and the decision fails closed."""

    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        try:
            return leaf(inp, ev)
        except EvaluationError as e:
            if inp.on_error == "closed":
                raise
            inp.errors.append(f"{label}: {e}")
            return False

    return node


TextIn = Literal["user", "system", "turns", "tool_result"]


class TextSource(Spec):
    """Which conversation text a text predicate reads."""

    in_: TextIn = Field(
        default="user",
        alias="in",
        description="user: latest user message; system: system prompt; turns: the last N "
        "non-system messages; tool_result: the last tool result.",
    )
    last: int | None = Field(default=None, ge=1, description="N for in: turns.")

    @model_validator(mode="after")
    def _last_for_turns(self) -> TextSource:
        if self.in_ == "turns" and self.last is None:
            raise ValueError("in: turns needs 'last' (how many turns)")
        if self.in_ != "turns" and self.last is not None:
            raise ValueError(f"'last' only applies to in: turns, not in: {self.in_}")
        return self


def text_search(spec: TextSource, search: Callable[[str], tuple[int, int] | None],
                predicate: str, detail: str = "") -> Node:
    """A leaf that holds where `search` finds a span in any text `spec` reads: each span is
    evidence that quotes the text matched (Evidence.quote, which the audit withholds)."""

    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        hit = False
        for source, text in inp.texts(spec.in_, spec.last):
            span = search(text)
            if span:
                hit = True
                ev.append(Evidence(predicate=predicate, source=source, detail=detail,
                                   quote=text[span[0] : span[1]], span=span))
        return hit

    return node


@dataclass(frozen=True)
class CheckContext:
    """Where a condition sits in its bundle, for checks that need the whole bundle."""

    spec: BundleSpec
    doc: YamlDoc
    loc: Loc  # of the condition mapping itself
    rule: str

    def issue(self, sub: Loc, message: str, **kw: Any) -> PolicyIssue:
        return self.doc.issue((*self.loc, *sub), message, rule=self.rule, **kw)


@dataclass(frozen=True)
class ConditionKind:
    """One kind of condition: `{name: payload}` in a policy file."""

    name: str
    model: type[BaseModel]  # one field, aliased `name`, holding the payload
    compile: Callable[[Any, CompileChild], Node]  # (payload, compile for sub-conditions)
    quotes_text: bool  # whether its evidence may carry conversation text in Evidence.quote
    check: Callable[[Any, CheckContext], list[PolicyIssue]] | None = None  # (payload, where)
    children: Callable[[Any], Sequence[tuple[Loc, Any]]] | None = None  # sub-conditions

    def payload(self, cond: BaseModel) -> Any:
        return getattr(cond, next(iter(self.model.model_fields)))


def branching_kind(
    name: str, model: type[BaseModel], compile: Callable[[Any, CompileChild], Node]
) -> ConditionKind:
    """A kind whose payload is a list of sub-conditions (`all`, `any`): it quotes no text of
    its own, and branch i sits at `(name, i)`."""
    return ConditionKind(
        name=name, model=model, compile=compile, quotes_text=False,
        children=lambda conds: [((name, i), c) for i, c in enumerate(conds)],
    )


_KINDS: dict[str, ConditionKind] = {}
_BY_MODEL: dict[type[BaseModel], ConditionKind] = {}


def register(kind: ConditionKind) -> ConditionKind:
    """Add a kind. Register before `steerguard.policy.schema` is imported: the schema's
    condition union is built from the kinds registered then."""
    fields = kind.model.model_fields
    if len(fields) != 1:
        raise TypeError(f"condition kind {kind.name!r}: its model must have exactly one field")
    (info,) = fields.values()
    key = info.alias or next(iter(fields))
    if key != kind.name:
        raise TypeError(f"condition kind {kind.name!r}: its model's field is named {key!r}")
    known = _KINDS.get(kind.name)
    if known is not None and known != kind:
        raise ValueError(f"condition kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind
    _BY_MODEL[kind.model] = kind
    return kind


def kinds() -> dict[str, ConditionKind]:
    return dict(_KINDS)


def kind_of(cond: BaseModel) -> ConditionKind:
    kind = _BY_MODEL.get(type(cond))
    if kind is None:
        raise TypeError(f"{type(cond).__name__} is not a registered condition kind")
    return kind


def compile_condition(cond: BaseModel) -> Node:
    kind = kind_of(cond)
    return kind.compile(kind.payload(cond), compile_condition)


def walk(cond: BaseModel, loc: Loc) -> Iterator[tuple[Loc, BaseModel]]:
    """`cond` and every condition nested in it, each with where it sits."""
    yield loc, cond
    kind = kind_of(cond)
    if kind.children is not None:
        for sub, child in kind.children(kind.payload(cond)):
            yield from walk(child, (*loc, *sub))


def _kind_name(value: Any) -> str | None:
    if isinstance(value, dict):
        keys = list(value)
        return keys[0] if len(keys) == 1 and keys[0] in _KINDS else None
    if isinstance(value, BaseModel):
        kind = _BY_MODEL.get(type(value))
        return kind.name if kind is not None else None
    return None


def condition_union() -> Any:
    """The tagged union of every registered kind (what `when:` and sub-conditions accept)."""
    if not _KINDS:
        raise RuntimeError("no condition kinds are registered")
    members = tuple(Annotated[k.model, Tag(k.name)] for k in _KINDS.values())
    return Annotated[
        Union[members],  # noqa: UP007  (a union built from a tuple of members)
        Discriminator(
            _kind_name,
            custom_error_type="invalid_condition",
            custom_error_message="a condition is a mapping with exactly one key, one of: "
            + ", ".join(sorted(_KINDS)),
        ),
    ]
