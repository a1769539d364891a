"""Condition datasets (policies/conditions/<name>): labelled texts in train.jsonl and
eval.jsonl, and in condition.yaml the contexts each text is rendered under for calibration.
Policy authors write them, so every mistake is an issue naming file, line and field."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from steerguard.inputfiles import InputFileError, json_lines
from steerguard.policy.errors import PolicyError, PolicyIssue
from steerguard.policy.yamlsource import issue_of, read_yaml

# The runtime probe reads the last prompt position of the whole conversation, system prompt
# included, and a direction fit on bare messages transfers badly: on SmolLM2-135M layer 6 a
# bare-only distress probe has held-out F1 0.98 without a system prompt but 0.18 under a tool
# agent's (scripts/compare_probes.py). Each text is therefore rendered under several contexts
# (a condition folder's condition.yaml may list its own under `contexts:`): null for none, a
# string for a system prompt, or a list of messages for a conversation the text continues.
Prompt = list[dict[str, str]]
Context = str | tuple[tuple[str, str], ...] | None  # None, system prompt, or (role, content)s

DEFAULT_CONTEXTS: tuple[Context, ...] = (
    None,
    "You are a helpful assistant.",
)
_ROLES = ("system", "user", "assistant")
_CONTEXTS_EXPECTED = (
    "a non-empty list whose items are null (no context), a system prompt string, or a list "
    "of messages with role (system, user or assistant) and content"
)
_ROW_EXPECTED = '{"text": "...", "label": true|false}'


@dataclass(frozen=True)
class ConditionData:
    """Texts of a condition dataset (policies/conditions/<name>), split and labelled, and the
    contexts (none, system prompts, conversations) each text is rendered under for calibration."""

    train_pos: list[str]
    train_neg: list[str]
    eval_pos: list[str]
    eval_neg: list[str]
    contexts: tuple[Context, ...] = DEFAULT_CONTEXTS

    def prompts(self, texts: Sequence[str]) -> list[Prompt]:
        """Every text under every context, text-major: text i is rows i*C .. i*C + C-1."""
        out: list[Prompt] = []
        for text in texts:
            for context in self.contexts:
                if context is None:
                    head: Prompt = []
                elif isinstance(context, str):
                    head = [{"role": "system", "content": context}]
                else:
                    head = [{"role": role, "content": content} for role, content in context]
                out.append([*head, {"role": "user", "content": text}])
        return out


def _context(value: object) -> Context:
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, list) and value and all(
        isinstance(m, dict) and m.get("role") in _ROLES and isinstance(m.get("content"), str)
        for m in value
    ):
        return tuple((m["role"], m["content"]) for m in value)
    raise ValueError(f"{value!r}"[:80])


def _contexts(folder: Path, out: list[PolicyIssue]) -> tuple[Context, ...]:
    spec_path = folder / "condition.yaml"
    if not spec_path.is_file():
        return DEFAULT_CONTEXTS
    doc = read_yaml(spec_path)
    out.extend(doc.issues)
    if doc.issues or doc.data is None:
        return DEFAULT_CONTEXTS
    if not isinstance(doc.data, dict):
        out.append(doc.issue((), "condition.yaml is a mapping", expected="contexts: [...], ..."))
        return DEFAULT_CONTEXTS
    contexts = doc.data.get("contexts")
    if contexts is None:
        return DEFAULT_CONTEXTS
    if not isinstance(contexts, list) or not contexts:
        out.append(doc.issue(("contexts",), "contexts is not a list of contexts",
                             value=str(contexts)[:80], expected=_CONTEXTS_EXPECTED))
        return DEFAULT_CONTEXTS
    parsed: list[Context] = []
    for i, item in enumerate(contexts):
        try:
            parsed.append(_context(item))
        except ValueError as e:
            out.append(doc.issue(("contexts", i), f"not a context: {e}",
                                 expected=_CONTEXTS_EXPECTED))
    return tuple(parsed)


def _rows(path: Path, out: list[PolicyIssue]) -> tuple[list[str], list[str]]:
    """Positive and negative texts of one split."""
    pos: list[str] = []
    neg: list[str] = []
    if not path.is_file():
        out.append(PolicyIssue(message=f"{path.name} is missing", file=str(path),
                               expected=f"one {_ROW_EXPECTED} per line"))
        return pos, neg
    try:
        rows = json_lines(path)
    except InputFileError as e:
        out.extend(issue_of(p) for p in e.problems)
        return pos, neg
    for number, row in rows:
        text = row.get("text") if isinstance(row, dict) else None
        label = row.get("label") if isinstance(row, dict) else None
        if not isinstance(text, str) or not isinstance(label, bool):
            wrong = "text" if not isinstance(text, str) else "label"
            out.append(PolicyIssue(
                message=f"not a labelled text: {wrong} is missing or of the wrong type"
                if isinstance(row, dict) else "not a JSON object",
                file=str(path), line=number, column=1,
                field=wrong if isinstance(row, dict) else None, expected=_ROW_EXPECTED))
            continue
        (pos if label else neg).append(text)
    return pos, neg


def read_condition_data(folder: str | Path) -> tuple[ConditionData, list[PolicyIssue]]:
    """The dataset and every mistake found in it (the data is only usable without any)."""
    folder = Path(folder)
    issues: list[PolicyIssue] = []
    train_pos, train_neg = _rows(folder / "train.jsonl", issues)
    eval_pos, eval_neg = _rows(folder / "eval.jsonl", issues)
    if not issues and not (train_pos and train_neg):
        issues.append(PolicyIssue(
            message=f"train.jsonl has {len(train_pos)} positive and {len(train_neg)} negative "
            "texts", file=str(folder / "train.jsonl"),
            expected="at least one text of each label to calibrate on"))
    contexts = _contexts(folder, issues)
    return ConditionData(train_pos, train_neg, eval_pos, eval_neg, contexts), issues


def load_condition_data(folder: str | Path) -> ConditionData:
    """Read train.jsonl and eval.jsonl, lines {"text": ..., "label": true|false}, and the
    calibration contexts from condition.yaml; PolicyError lists every mistake."""
    data, issues = read_condition_data(folder)
    if issues:
        raise PolicyError(issues)
    return data
