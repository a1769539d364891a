"""A loaded bundle: the validated spec, its content hash and the rules compiled for speed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steerguard.canonical import digest
from steerguard.policy.conditions import Node, compile_condition
from steerguard.policy.decision import BundleRef
from steerguard.policy.fields import Getter, getter
from steerguard.policy.schema import BundleSpec, RuleSpec, StrengthFrom
from steerguard.runtime.plan import Operation, Positions


@dataclass(frozen=True)
class CompiledApply:
    """One apply entry with the vector's defaults filled in."""

    name: str  # the bundle's vector name
    concept: str  # the library vector
    vector_hash: str | None
    strength: float | StrengthFrom
    layers: tuple[int, ...]
    op: Operation
    positions: Positions


@dataclass(frozen=True)
class CompiledRule:
    spec: RuleSpec
    when: Node
    rank: tuple[int, str]  # sort key: priority descending, then id
    applies: tuple[CompiledApply, ...]


@dataclass(frozen=True)
class Bundle:
    spec: BundleSpec
    path: Path  # the YAML file
    content_hash: str
    rules: tuple[CompiledRule, ...]  # in composition order
    profile_getters: dict[str, Getter]
    context_getters: dict[str, Getter]

    @property
    def ref(self) -> BundleRef:
        return BundleRef(
            name=self.spec.name, revision=self.spec.revision, content_hash=self.content_hash
        )

    @property
    def root(self) -> Path:
        """The bundle's folder (tests and probes live next to the YAML)."""
        return self.path.parent

    @property
    def activation_conditions(self) -> dict[str, tuple[int, ...]]:
        """Declared activation conditions and the layers each probe reads."""
        return {name: a.read_layers for name, a in self.spec.activations.items()}


def spec_hash(spec: BundleSpec) -> str:
    """Hash of the validated content, so comments and key order do not change it."""
    return digest(spec.model_dump(mode="json", by_alias=True))


def _applies(spec: BundleSpec, rule: RuleSpec) -> tuple[CompiledApply, ...]:
    out = []
    for a in rule.apply:
        v = spec.vectors[a.vector]
        out.append(
            CompiledApply(
                name=a.vector,
                concept=v.concept or a.vector,
                # the runtime compares bare hex; pins may say sha256:<HEX>
                vector_hash=v.hash.lower().removeprefix("sha256:") if v.hash else None,
                strength=v.strength if a.strength is None else a.strength,
                layers=a.layers or v.layers,
                op=a.op or v.op,
                positions=a.positions or v.positions,
            )
        )
    return tuple(out)


def compile_bundle(spec: BundleSpec, path: Path) -> Bundle:
    compiled = (
        CompiledRule(
            spec=r,
            when=compile_condition(r.when),
            rank=(-r.priority, r.id),
            applies=_applies(spec, r),
        )
        for r in spec.rules
    )
    rules = tuple(sorted(compiled, key=lambda c: c.rank))
    return Bundle(
        spec=spec,
        path=path,
        content_hash=spec_hash(spec),
        rules=rules,
        profile_getters={name: getter(name) for name in spec.profile},
        context_getters={name: getter(name) for name in spec.context},
    )
