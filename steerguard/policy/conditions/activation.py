"""`activation: {condition, threshold}`: a calibrated probe's score for the prompt (read from
the model's own activations during prefill) is at or above the threshold."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from steerguard.policy.conditions.base import (
    CheckContext,
    CompileChild,
    ConditionKind,
    EvalInput,
    Node,
    guard,
)
from steerguard.policy.decision import Evidence
from steerguard.policy.errors import EvaluationError, PolicyIssue
from steerguard.policy.specbase import Spec

AUTO_THRESHOLD = 0.5  # probe scores are calibrated probabilities; 0.5 is the fitted threshold


def _auto_or_number(value: Any) -> str:
    return "auto" if isinstance(value, str) else "number"


class ActivationPredicate(Spec):
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


class ActivationCond(Spec):
    activation: ActivationPredicate


def compile_activation(pred: ActivationPredicate, _: CompileChild) -> Node:
    name, threshold = pred.condition, pred.threshold
    t = AUTO_THRESHOLD if threshold == "auto" else float(threshold)
    label = "auto (calibrated)" if threshold == "auto" else f"{t:.3f}"

    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        score = inp.scores.get(name) if inp.scores is not None else None
        if score is None:
            raise EvaluationError(f"no activation score for {name!r} was supplied")
        if not 0.0 <= score <= 1.0:
            raise EvaluationError(f"activation score {score!r} for {name!r} is not in [0, 1]")
        if score < t:
            return False
        ev.append(Evidence(predicate="activation", source=f"activation.{name}",
                           detail=f"score {score:.3f} >= threshold {label}"))
        return True

    return guard(node, f"activation {name!r}")


def check_activation(pred: ActivationPredicate, where: CheckContext) -> list[PolicyIssue]:
    declared = where.spec.activations
    if pred.condition in declared:
        return []
    names = ", ".join(sorted(declared))
    return [where.issue(("activation", "condition"),
                        f"unknown activation condition {pred.condition!r}",
                        expected="a name declared under 'activations', "
                        + (f"one of: {names}" if names else "none is declared"))]


KINDS = (
    ConditionKind(name="activation", model=ActivationCond, compile=compile_activation,
                  quotes_text=False, check=check_activation),
)
