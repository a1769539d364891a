"""Policy tests: YAML cases next to a bundle (tests/*.yaml), a runner and rule coverage."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from steerguard.policy.bundle import Bundle
from steerguard.policy.catalog import VectorCatalog
from steerguard.policy.decision import Decision, DropReason
from steerguard.policy.engine import PolicyEngine
from steerguard.policy.errors import PolicyError, PolicyIssue, ProfileError
from steerguard.policy.inputs import ChatMessage, RequestContext, UserProfile
from steerguard.policy.loader import BUNDLE_FILE, load_bundle
from steerguard.policy.validation import validate
from steerguard.policy.yamlsource import read_yaml

if TYPE_CHECKING:
    from steerguard.policy.activation import ActivationProbe

TOLERANCE = 1e-6


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ExpectedVector(_Strict):
    strength: float
    layers: list[int] | None = None
    positions: str | None = None


class ExpectedDrop(_Strict):
    rule: str
    vector: str | None = None
    reason: DropReason


class Expect(_Strict):
    rules: list[str] | None = Field(default=None, description="Exactly the matched rule ids.")
    applied: dict[str, float | ExpectedVector] | None = Field(
        default=None,
        description="Exactly these library vectors in the plan, with their strength.",
    )
    not_applied: list[str] = Field(default_factory=list)
    denied: list[str] = Field(default_factory=list, description="Vector names dropped as denied.")
    dropped: list[ExpectedDrop] = Field(default_factory=list)
    failed_closed: bool = False


class Inputs(_Strict):
    profile: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    activation_scores: dict[str, float] | None = None


class Case(Inputs):
    name: str
    message: str | None = Field(default=None, description="Shorthand: one user message.")
    messages: list[ChatMessage] | None = None
    expect: Expect

    @model_validator(mode="after")
    def _one_input(self) -> Case:
        if (self.message is None) == (self.messages is None):
            raise ValueError("give exactly one of message or messages")
        return self


class PolicyTestFile(_Strict):
    defaults: Inputs = Inputs()
    cases: list[Case] = Field(min_length=1)


@dataclass
class CaseResult:
    file: str
    name: str
    failures: list[str]
    decision: Decision | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class BundleReport:
    bundle: Bundle | None
    path: Path
    results: list[CaseResult] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)
    probes: list[ActivationProbe] = field(default_factory=list)
    uncalibrated: list[str] = field(default_factory=list)
    error: PolicyError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.results) and all(r.ok for r in self.results)


def find_bundles(root: str | Path) -> list[Path]:
    """Bundle folders (with bundle.yaml) at or under `root`, or `root` itself if a file."""
    root = Path(root)
    if root.is_file():
        return [root]
    if (root / BUNDLE_FILE).is_file():
        return [root]
    return sorted(p.parent for p in root.rglob(BUNDLE_FILE))


def find_test_files(bundle_path: Path) -> list[Path]:
    folder = bundle_path if bundle_path.is_dir() else bundle_path.parent
    return sorted((folder / "tests").glob("*.yaml")) + sorted((folder / "tests").glob("*.yml"))


def run_bundle_tests(
    path: str | Path, catalog: VectorCatalog | None = None, num_layers: int | None = None
) -> BundleReport:
    from steerguard.policy.activation import ActivationProbe  # torch: only to run tests

    path = Path(path)
    try:
        bundle = load_bundle(path, catalog, num_layers)
    except PolicyError as e:
        return BundleReport(bundle=None, path=path, error=e)
    report = BundleReport(bundle=bundle, path=path)
    engine = PolicyEngine(bundle)
    exercised: set[str] = set()
    issues: list[PolicyIssue] = []
    for file in find_test_files(path):
        tf = _load_test_file(file, issues)
        if tf is None:
            continue
        for case in tf.cases:
            result = run_case(engine, case, tf.defaults, str(file))
            report.results.append(result)
            if result.decision is not None:
                exercised.update(result.decision.rule_ids)
    report.uncovered = [r.spec.id for r in bundle.rules if r.spec.id not in exercised]
    for name in bundle.spec.activations:
        probe_file = bundle.root / "probes" / f"{name}.json"
        if not probe_file.is_file():
            report.uncalibrated.append(name)
            continue
        try:
            report.probes.append(ActivationProbe.load(probe_file))
        except (OSError, ValueError) as e:  # ValueError: pydantic's, and bad UTF-8
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            issues.append(PolicyIssue(message=f"cannot read the probe: {first}",
                                      file=str(probe_file),
                                      expected="a probe written by `steerguard eval`"))
    if issues:
        report.error = PolicyError(issues)
    return report


def _load_test_file(file: Path, issues: list[PolicyIssue]) -> PolicyTestFile | None:
    doc = read_yaml(file)
    if doc.issues:
        issues.extend(doc.issues)
        return None
    return validate(PolicyTestFile, doc.data, doc, (), issues)


def run_case(engine: PolicyEngine, case: Case, defaults: Inputs, file: str = "") -> CaseResult:
    messages = case.messages or [ChatMessage(role="user", content=case.message or "")]
    profile_data = case.profile if case.profile is not None else defaults.profile
    context_data = case.context if case.context is not None else defaults.context
    scores = {**(defaults.activation_scores or {}), **(case.activation_scores or {})}
    try:
        profile = UserProfile.model_validate(profile_data) if profile_data is not None else None
        context = RequestContext.model_validate(context_data or {})
        decision = engine.decide(messages, profile, context, scores or None)
    except (ValidationError, ProfileError) as e:
        return CaseResult(file, case.name, [f"bad case input: {e}"])
    return CaseResult(file, case.name, check(decision, case.expect), decision)


def check(d: Decision, x: Expect) -> list[str]:
    """What in the decision differs from the expectation (empty when it passes)."""
    out: list[str] = []
    if d.failed_closed != x.failed_closed:
        out.append(f"failed_closed is {d.failed_closed}, expected {x.failed_closed} ({d.error})")
    if x.rules is not None and sorted(d.rule_ids) != sorted(x.rules):
        out.append(f"matched rules {sorted(d.rule_ids)}, expected {sorted(x.rules)}")
    plan: dict[str, list[Any]] = {}
    for i in d.plan.interventions:
        plan.setdefault(i.vector, []).append(i)
    if x.applied is not None:
        if set(plan) != set(x.applied):
            out.append(f"applied vectors {sorted(plan)}, expected {sorted(x.applied)}")
        for name, want in x.applied.items():
            want = want if isinstance(want, ExpectedVector) else ExpectedVector(strength=want)
            for i in plan.get(name, []):
                if abs(i.strength - want.strength) > TOLERANCE:
                    out.append(
                        f"{name} strength {i.strength:+.4f} at layers {list(i.layers)}, "
                        f"expected {want.strength:+.4f}"
                    )
                if want.layers is not None and list(i.layers) != want.layers:
                    out.append(f"{name} layers {list(i.layers)}, expected {want.layers}")
                if want.positions is not None and str(i.positions) != want.positions:
                    out.append(f"{name} positions {i.positions}, expected {want.positions}")
    for name in x.not_applied:
        if name in plan:
            out.append(f"{name} is applied, expected not")
    denied = {dr.vector for dr in d.dropped if dr.reason is DropReason.DENIED}
    for name in x.denied:
        if name not in denied:
            out.append(f"{name} was not denied (denied: {sorted(v for v in denied if v)})")
    for want in x.dropped:
        if not any(
            dr.rule_id == want.rule
            and dr.reason is want.reason
            and (want.vector is None or dr.vector == want.vector)
            for dr in d.dropped
        ):
            out.append(f"no drop of {want.rule}/{want.vector} for {want.reason.value}")
    return out
