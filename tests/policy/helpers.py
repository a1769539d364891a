from __future__ import annotations

import shutil
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from steerguard.policy.engine import PolicyEngine
from steerguard.policy.errors import PolicyError
from steerguard.policy.loader import load_bundle_text
from steerguard.resources import default_bundle_path, policies_dir

REPO = Path(__file__).resolve().parents[2]
POLICIES = policies_dir()
SUPPORT = default_bundle_path()

HEADER = """\
name: t
revision: "1"
on_error: {on_error}
limits: {{max_total_strength: {budget}, max_vectors: {max_vectors}}}
vectors:
  empathy: {{layers: [8, 9], strength: 0.3}}
  caution: {{layers: [8, 9], strength: 0.2}}
  formal: {{concept: formality, layers: [8, 9], strength: 0.3}}
  casual: {{concept: formality, layers: [8, 9], strength: -0.3}}
  concise: {{concept: concision, layers: [9, 10], strength: 0.2}}
profile:
  age_band: {{type: enum, values: [minor, adult]}}
  roles: {{type: list, values: [customer, vip]}}
  formality_preference: {{type: number, min: 0, max: 1}}
  preferences.register: {{type: enum, values: [formal, casual]}}
  consent.personalization: {{type: boolean}}
context:
  channel: {{type: enum, values: [chat, sms]}}
activations:
  harmful: {{layer: 4}}
rules:
"""


def bundle_yaml(
    rules: str, on_error: str = "closed", budget: float = 1.0, max_vectors: int = 4
) -> str:
    head = HEADER.format(on_error=on_error, budget=budget, max_vectors=max_vectors)
    return head + textwrap.indent(textwrap.dedent(rules).strip("\n"), "  ") + "\n"


def keyword_bundle(
    name: str,
    vectors: Mapping[str, tuple[str, float]],
    words: Sequence[str],
    *,
    rule: str,
    priority: int = 1,
    revision: str = "1",
    max_vectors: int = 4,
) -> str:
    """A bundle of one rule: a user message with one of `words` gets every vector of
    `vectors` ({name: (layers as written in YAML, strength)}), for a model of few layers."""
    lines = [f"name: {name}", f'revision: "{revision}"', "on_error: closed",
             f"limits: {{max_total_strength: 1.0, max_vectors: {max_vectors}}}", "vectors:"]
    lines += [f"  {vector}: {{layers: {layers}, strength: {strength}}}"
              for vector, (layers, strength) in vectors.items()]
    lines += ["rules:", f"  - id: {rule}", f"    priority: {priority}",
              f"    when: {{keywords: {{words: [{', '.join(words)}]}}}}",
              f"    apply: [{', '.join(vectors)}]"]
    return "\n".join(lines) + "\n"


def engine(rules: str, **kw: object) -> PolicyEngine:
    return PolicyEngine(load_bundle_text(bundle_yaml(rules, **kw), "t.yaml"))  # type: ignore[arg-type]


def load_errors(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as e:
        load_bundle_text(text, "t.yaml")
    return e.value


def policy_folder(root: Path) -> Path:
    """`root` as a policy folder beside the shipped one: its concept and condition datasets
    copied in (a bundle's paths must stay inside its own policy folder)."""
    for name in ("concepts", "conditions"):
        shutil.copytree(POLICIES / name, root / name)
    return root
