"""A loaded bundle: the validated spec, its content hash and the rules compiled for speed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from steerguard.policy.conditions import Node, compile_condition
from steerguard.policy.decision import BundleRef
from steerguard.policy.fields import Getter, getter
from steerguard.policy.schema import BundleSpec, RuleSpec


@dataclass(frozen=True)
class CompiledRule:
    spec: RuleSpec
    when: Node
    rank: tuple[int, str]  # sort key: priority descending, then id


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
    def activation_conditions(self) -> dict[str, int]:
        """Declared activation conditions and the layer each probe reads."""
        return {name: a.layer for name, a in self.spec.activations.items()}


def spec_hash(spec: BundleSpec) -> str:
    """Hash of the validated content, so comments and key order do not change it."""
    payload = json.dumps(
        spec.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def compile_bundle(spec: BundleSpec, path: Path) -> Bundle:
    rules = tuple(
        sorted(
            (
                CompiledRule(spec=r, when=compile_condition(r.when), rank=(-r.priority, r.id))
                for r in spec.rules
            ),
            key=lambda c: c.rank,
        )
    )
    return Bundle(
        spec=spec,
        path=path,
        content_hash=spec_hash(spec),
        rules=rules,
        profile_getters={name: getter(name) for name in spec.profile},
        context_getters={name: getter(name) for name in spec.context},
    )
