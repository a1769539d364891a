"""Checks that need the whole bundle: references, bounds, duplicates, regexes, hashes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from steerguard.policy.catalog import VectorCatalog
from steerguard.policy.datasets import read_condition_data
from steerguard.policy.errors import PolicyIssue
from steerguard.policy.fields import declaration_problem, literal_problem
from steerguard.policy.paths import resolve_inside
from steerguard.policy.schema import (
    ActivationCond,
    AllCond,
    AnyCond,
    BundleSpec,
    Condition,
    ContextCond,
    FieldSpec,
    NotCond,
    ProfileCond,
    RegexCond,
    RuleSpec,
    StrengthFrom,
)
from steerguard.policy.textmatch import BoundedRegex
from steerguard.policy.yamlsource import Loc, YamlDoc


def _one_of(names: object) -> str:
    items = sorted(names)  # type: ignore[call-overload]
    return "one of: " + ", ".join(items) if items else "none is declared"


def _hashes_match(pinned: str, actual: str) -> bool:
    strip = lambda h: h.lower().removeprefix("sha256:")  # noqa: E731
    return strip(pinned) == strip(actual)


@dataclass(frozen=True)
class Target:
    """What is known of where the bundle will run: the vector library (to check pins) and
    the model's decoder layer count (to check layers); either may be unknown."""

    catalog: VectorCatalog | None = None
    num_layers: int | None = None

    def layer_problem(self, layers: tuple[int, ...], what: str) -> tuple[str, str] | None:
        """(message, expected) when `layers` name a layer the model lacks."""
        n = self.num_layers
        beyond = [x for x in layers if n is not None and x >= n]
        if not beyond or n is None:
            return None
        return (f"{what}: layer{'s' if len(beyond) > 1 else ''} "
                f"{', '.join(map(str, beyond))} out of range for the model ({n} layers)",
                f"layers within 0..{n - 1}")


def check_header(
    spec: BundleSpec, doc: YamlDoc, root: Path, base: Path, target: Target
) -> list[PolicyIssue]:
    out: list[PolicyIssue] = []
    by_concept: dict[str, tuple[str, str | None]] = {}
    catalog = target.catalog
    for name, v in spec.vectors.items():
        loc: Loc = ("vectors", name)
        concept = v.concept or name
        beyond = target.layer_problem(v.layers, f"vector {name!r}")
        if beyond:
            out.append(doc.issue((*loc, "layers"), beyond[0], expected=beyond[1]))
        if abs(v.strength) > v.max_strength:
            out.append(
                doc.issue(
                    (*loc, "strength"),
                    "strength out of bounds",
                    value=v.strength,
                    expected=f"|strength| <= max_strength {v.max_strength}",
                )
            )
        if concept in by_concept and v.hash != by_concept[concept][1]:
            other = by_concept[concept][0]
            out.append(
                doc.issue(
                    (*loc, "hash"),
                    f"vector {concept!r} is pinned differently here and in {other!r}",
                    value=v.hash,
                    expected="one pin per library vector",
                )
            )
        by_concept.setdefault(concept, (name, v.hash))
        if v.hash and catalog is not None:
            actual = catalog.content_hash(concept)
            if actual is None:
                out.append(
                    doc.issue(
                        (*loc, "concept"),
                        f"vector {concept!r} is not in the vector library",
                        expected="a vector the library holds",
                    )
                )
            elif not _hashes_match(v.hash, actual):
                out.append(
                    doc.issue(
                        (*loc, "hash"),
                        f"pinned hash does not match the library's vector {concept!r}",
                        value=v.hash,
                        expected=actual,
                    )
                )
    for scope, decls in (("profile", spec.profile), ("context", spec.context)):
        for name, fs in decls.items():
            problem = declaration_problem(scope, name, fs)
            if problem:
                out.append(doc.issue((scope, name), problem, value=name))
    for name, a in spec.activations.items():
        beyond = target.layer_problem(a.read_layers, f"activation condition {name!r}")
        if beyond:
            key = "layer" if a.layer is not None else "layers"
            out.append(doc.issue(("activations", name, key), beyond[0], expected=beyond[1]))
        if a.dataset is not None:
            out.extend(_check_dataset(a.dataset, doc, ("activations", name, "dataset"), root,
                                      base))
    return out


def _check_dataset(value: str, doc: YamlDoc, loc: Loc, root: Path, base: Path
                   ) -> list[PolicyIssue]:
    folder, problem = resolve_inside(root, base, value)
    expected = f"a folder with train.jsonl and eval.jsonl, relative to {base}"
    if folder is None:
        return [doc.issue(loc, f"condition dataset folder {problem}", value=value,
                          expected=f"{expected}, inside {root}")]
    if not folder.is_dir():
        return [doc.issue(loc, "condition dataset folder not found", value=value,
                          expected=expected)]
    return read_condition_data(folder)[1]


def check_rule(
    rule: RuleSpec,
    index: int,
    spec: BundleSpec,
    doc: YamlDoc,
    first_line: dict[str, int],
    target: Target,
) -> list[PolicyIssue]:
    out: list[PolicyIssue] = []
    loc: Loc = ("rules", index)

    def issue(sub: Loc, message: str, **kw: object) -> None:
        out.append(doc.issue((*loc, *sub), message, rule=rule.id, **kw))  # type: ignore[arg-type]

    if rule.id in first_line:
        issue(
            ("id",),
            "duplicate rule id",
            value=rule.id,
            expected=f"a unique id (first used at line {first_line[rule.id]})",
        )
    else:
        first_line[rule.id] = doc.locate((*loc, "id"))[0] or 0

    applied: set[str] = set()
    for j, a in enumerate(rule.apply):
        v = spec.vectors.get(a.vector)
        if v is None:
            issue(
                ("apply", j, "vector"),
                f"unknown vector {a.vector!r}",
                expected=_one_of(spec.vectors),
            )
            continue
        applied.add(a.vector)
        beyond = target.layer_problem(a.layers or (), f"vector {a.vector!r}")
        if beyond:
            issue(("apply", j, "layers"), beyond[0], expected=beyond[1])
        s = a.strength
        if isinstance(s, float) and abs(s) > v.max_strength:
            issue(
                ("apply", j, "strength"),
                "strength out of bounds",
                value=s,
                expected=f"|strength| <= {v.max_strength} (max_strength of {a.vector!r})",
            )
        if isinstance(s, StrengthFrom):
            out.extend(
                _check_strength_from(
                    s, v.max_strength, spec, doc, (*loc, "apply", j, "strength"), rule.id
                )
            )
    for j, name in enumerate(rule.deny):
        if name not in spec.vectors:
            issue(("deny", j), f"unknown vector {name!r}", expected=_one_of(spec.vectors))
        elif name in applied:
            issue(
                ("deny", j),
                f"rule both applies and denies {name!r}",
                expected="a vector the rule does not apply",
            )
    for sub, cond in _walk(rule.when, ("when",)):
        out.extend(_check_condition(cond, spec, doc, (*loc, *sub), rule.id))
    return out


def _check_strength_from(
    s: StrengthFrom, bound: float, spec: BundleSpec, doc: YamlDoc, loc: Loc, rule: str
) -> list[PolicyIssue]:
    out = []
    name = s.from_.removeprefix("profile.")
    fs = spec.profile.get(name)
    if fs is None:
        out.append(
            doc.issue(
                (*loc, "from"),
                f"unknown profile field {name!r}",
                rule=rule,
                expected="a declared numeric profile field, " + _one_of(spec.profile),
            )
        )
    elif fs.type not in ("number", "integer"):
        out.append(
            doc.issue(
                (*loc, "from"),
                f"profile field {name!r} is {fs.type}",
                rule=rule,
                expected="a number or integer field",
            )
        )
    for key in ("min", "max"):
        value = getattr(s, key)
        if abs(value) > bound:
            out.append(
                doc.issue(
                    (*loc, key),
                    "strength bound out of bounds",
                    rule=rule,
                    value=value,
                    expected=f"|{key}| <= {bound} (the vector's max_strength)",
                )
            )
    return out


def _walk(cond: Condition, loc: Loc) -> Iterator[tuple[Loc, Condition]]:
    yield loc, cond
    if isinstance(cond, AllCond):
        for i, c in enumerate(cond.all):
            yield from _walk(c, (*loc, "all", i))
    elif isinstance(cond, AnyCond):
        for i, c in enumerate(cond.any):
            yield from _walk(c, (*loc, "any", i))
    elif isinstance(cond, NotCond):
        yield from _walk(cond.not_, (*loc, "not"))


def _check_condition(
    cond: Condition, spec: BundleSpec, doc: YamlDoc, loc: Loc, rule: str
) -> list[PolicyIssue]:
    out: list[PolicyIssue] = []
    if isinstance(cond, ProfileCond | ContextCond):
        scope = "profile" if isinstance(cond, ProfileCond) else "context"
        pred = cond.profile if isinstance(cond, ProfileCond) else cond.context
        decls: dict[str, FieldSpec] = getattr(spec, scope)
        ploc = (*loc, scope)
        fs = decls.get(pred.field)
        if fs is None:
            out.append(
                doc.issue(
                    (*ploc, "field"),
                    f"unknown {scope} field {pred.field!r}",
                    rule=rule,
                    expected=f"a field declared under '{scope}', " + _one_of(decls),
                )
            )
            return out
        if pred.range is not None and fs.type not in ("number", "integer"):
            out.append(
                doc.issue(
                    (*ploc, "range"),
                    f"range needs a number field; {pred.field!r} is {fs.type}",
                    rule=rule,
                    expected="equals, in or exists",
                )
            )
        literals = [("equals", pred.equals)] if pred.equals is not None else []
        literals += [(("in", i), v) for i, v in enumerate(pred.in_ or [])]
        for key, value in literals:
            problem = literal_problem(fs, value)
            if problem:
                sub = key if isinstance(key, tuple) else (key,)
                out.append(
                    doc.issue(
                        (*ploc, *sub),
                        f"value can never match {scope} field {pred.field!r}",
                        rule=rule,
                        value=value,
                        expected=problem.removeprefix("expected "),
                    )
                )
    elif isinstance(cond, RegexCond):
        try:
            BoundedRegex(cond.regex.pattern, cond.regex.ignore_case)
        except ValueError as e:
            out.append(
                doc.issue(
                    (*loc, "regex", "pattern"),
                    str(e),
                    rule=rule,
                    value=cond.regex.pattern,
                    expected="a valid regular expression",
                )
            )
    elif isinstance(cond, ActivationCond):
        name = cond.activation.condition
        if name not in spec.activations:
            out.append(
                doc.issue(
                    (*loc, "activation", "condition"),
                    f"unknown activation condition {name!r}",
                    rule=rule,
                    expected="a name declared under 'activations', " + _one_of(spec.activations),
                )
            )
    return out
