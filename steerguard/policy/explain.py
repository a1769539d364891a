"""A readable account of a decision, for people (the CLI) and for the audit log."""

from __future__ import annotations

from collections.abc import Callable

from steerguard.policy.decision import BundleRef, Decision, Dropped, RuleMatch
from steerguard.runtime.plan import Intervention


def layer_span(layers: tuple[int, ...]) -> str:
    if len(layers) > 1 and list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


def describe_intervention(i: Intervention) -> str:
    op = i.op.value  # an enum's value is a property: read once
    amount = "" if op == "ablate" else f" {i.strength:+.3f}"
    return f"{i.vector} {op}{amount} at layers {layer_span(i.layers)} ({i.positions})"


def explanation(
    bundle: BundleRef,
    matched: tuple[RuleMatch, ...],
    dropped: tuple[Dropped, ...],
    interventions: tuple[Intervention, ...],
    errors: tuple[str, ...] | list[str],
    failed_closed: bool,
    quote: Callable[[str], str] = repr,
    value: Callable[[str], str] = str,
) -> str:
    lines = [f"policy {bundle.name} revision {bundle.revision} ({bundle.content_hash[:12]})"]
    if failed_closed:
        lines.append(f"FAILED CLOSED: {'; '.join(errors)}; no steering, the caller must not answer")
        return "\n".join(lines)
    if not matched:
        lines.append("no rule matched")
    for m in matched:
        why = "; ".join(
            f"{e.predicate} {e.source}: {e.describe(quote, value)}"
            + (f" [{e.span[0]}:{e.span[1]}]" if e.span else "")
            for e in m.evidence
        )
        lines.append(f"matched {m.rule_id} (priority {m.priority}): {why or 'always'}")
    for d in dropped:
        what = f"{d.rule_id}/{d.vector}" if d.vector else d.rule_id
        lines.append(f"dropped {what}: {d.reason.value}: {d.detail}")
    for e in errors:
        lines.append(f"ignored (on_error open): {e}")
    if interventions:
        lines.extend(f"steer {describe_intervention(i)} <- {i.source}" for i in interventions)
    else:
        lines.append("plan: no steering")
    return "\n".join(lines)


def render(
    decision: Decision, quote: Callable[[str], str] = repr, value: Callable[[str], str] = str
) -> str:
    """`decision`'s explanation with each quote of the conversation rendered by `quote` and
    each profile or context value by `value`."""
    return explanation(
        decision.bundle, decision.matched, decision.dropped, decision.plan.interventions,
        decision.errors, decision.failed_closed, quote, value,
    )
