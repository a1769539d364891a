"""PolicyEngine: one request in, one immutable Decision out; a pure function of its input."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from steerguard.policy.bundle import Bundle, CompiledRule
from steerguard.policy.compose import compose
from steerguard.policy.conditions import MISSING, EvalInput
from steerguard.policy.decision import BundleRef, Decision, Evidence, RuleMatch
from steerguard.policy.errors import EvaluationError, ProfileError
from steerguard.policy.explain import explanation
from steerguard.policy.fields import Getter, value_problem
from steerguard.policy.inputs import ChatMessage, RequestContext, UserProfile, derive_tool_state
from steerguard.policy.schema import ActivationSpec, FieldSpec
from steerguard.runtime.plan import SteeringPlan


class PolicyEngine:
    """Decides steering for one bundle. Stateless after construction, so thread-safe."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self._ref = bundle.ref
        self._revision = f"{bundle.ref.name}@{bundle.ref.revision}:{bundle.ref.content_hash[:12]}"

    @property
    def ref(self) -> BundleRef:
        return self._ref

    @property
    def activation_conditions(self) -> dict[str, ActivationSpec]:
        """Conditions the runtime must score (name -> layer, dataset) before `decide`."""
        return dict(self.bundle.spec.activations)

    def decide(
        self,
        messages: Sequence[ChatMessage | Mapping[str, Any]],
        profile: UserProfile | None = None,
        context: RequestContext | None = None,
        activation_scores: Mapping[str, float] | None = None,
    ) -> Decision:
        """Which vectors to apply, how strongly, where, and why.

        `activation_scores` maps each declared activation condition to its probe's score in
        [0, 1] for this prompt (`ActivationProbe.score`). Raises ProfileError when the profile
        or context does not fit the bundle's declarations (an application bug, not a policy
        outcome).
        """
        msgs = [
            m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in messages
        ]
        ctx = context or RequestContext()
        spec = self.bundle.spec
        profile_values = _values("profile", profile, spec.profile, self.bundle.profile_getters)
        context_values = _values("context", ctx, spec.context, self.bundle.context_getters)
        decision_id = self._decision_id(msgs, profile, ctx, activation_scores)

        inp = _prepare(msgs, ctx, profile_values, context_values, activation_scores, spec.on_error)
        matched: list[tuple[CompiledRule, list[Evidence]]] = []
        try:
            for rule in self.bundle.rules:
                ev: list[Evidence] = []
                if rule.when(inp, ev):
                    matched.append((rule, ev))
        except EvaluationError as e:
            return Decision(
                decision_id=decision_id,
                bundle=self._ref,
                plan=SteeringPlan(revision=self._revision),
                failed_closed=True,
                errors=(str(e),),
                explanation=explanation(self._ref, (), (), (), [str(e)], True),
            )

        plan, dropped = compose(self.bundle, [r for r, _ in matched], profile_values)
        plan = SteeringPlan(interventions=plan.interventions, revision=self._revision)
        matches = tuple(
            RuleMatch(
                rule_id=r.spec.id,
                priority=r.spec.priority,
                description=r.spec.description,
                evidence=tuple(ev),
            )
            for r, ev in matched
        )
        drops = tuple(dropped)
        return Decision(
            decision_id=decision_id,
            bundle=self._ref,
            matched=matches,
            dropped=drops,
            plan=plan,
            errors=tuple(inp.errors),
            explanation=explanation(
                self._ref, matches, drops, plan.interventions, inp.errors, False
            ),
        )

    def _decision_id(
        self,
        msgs: list[ChatMessage],
        profile: UserProfile | None,
        ctx: RequestContext,
        scores: Mapping[str, float] | None,
    ) -> str:
        payload = {
            "messages": [m.model_dump(mode="json", exclude_defaults=True) for m in msgs],
            "profile": profile.model_dump(mode="json") if profile is not None else None,
            "context": ctx.model_dump(mode="json", exclude_defaults=True),
            "activation_scores": dict(sorted(scores.items())) if scores else None,
        }
        canon = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(f"{self._ref.content_hash}\n{canon}".encode()).hexdigest()[:32]


def _values(
    scope: str, obj: BaseModel | None, decls: dict[str, FieldSpec], getters: dict[str, Getter]
) -> dict[str, Any]:
    """The declared fields' values, checked against their declarations."""
    if obj is None:
        return {}
    undeclared = sorted(set(obj.model_extra or {}) - set(decls))
    if undeclared:
        raise ProfileError(
            f"{scope} has fields the bundle does not declare: {', '.join(undeclared)}; "
            f"declared: {', '.join(sorted(decls)) or 'none'}"
        )
    out: dict[str, Any] = {}
    for name, get in getters.items():
        value = get(obj)
        if value is MISSING:
            continue
        problem = value_problem(decls[name], value)
        if problem:
            raise ProfileError(f"{scope} field {name!r} = {value!r}: {problem}")
        out[name] = value
    return out


def _prepare(
    msgs: list[ChatMessage],
    ctx: RequestContext,
    profile: dict[str, Any],
    context: dict[str, Any],
    scores: Mapping[str, float] | None,
    on_error: str,
) -> EvalInput:
    user: list[tuple[str, str]] = []
    system: list[tuple[str, str]] = []
    turns: list[tuple[str, str]] = []
    user_turns = 0
    for i, m in enumerate(msgs):
        src = f"message[{i}].{m.role}"
        if m.role == "system":
            system.append((src, m.content))
            continue
        turns.append((src, m.content))
        if m.role == "user":
            user_turns += 1
            user = [(src, m.content)]
    return EvalInput(
        user=user,
        system=system,
        turns=turns,
        tool=ctx.tool_state or derive_tool_state(msgs),
        user_turns=user_turns,
        profile=profile,
        context=context,
        scores=scores,
        on_error=on_error,
    )
