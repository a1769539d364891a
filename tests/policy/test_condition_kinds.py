"""Condition kinds come from the registry (steerguard/policy/conditions/): the schema's union,
compiling, checking and the audit's withholding of quotes all follow what a kind declares."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from steerguard.audit.build import RecordBuilder, RequestItem
from steerguard.audit.config import DEFAULT_MASKS
from steerguard.audit.masking import Masker
from steerguard.audit.records import Outcome
from steerguard.policy.conditions import kinds
from steerguard.policy.inputs import ChatMessage, RequestContext, UserProfile
from steerguard.policy.schema import BundleSpec

from .helpers import engine, load_errors

# One condition per registered kind that holds on CONVERSATION. A new kind adds its sample
# here (the first test fails until it does), and so is held to the contracts below.
SAMPLES = {
    "all": "{all: [{keywords: {words: [parcel]}}, {turns: {min: 1}}]}",
    "any": "{any: [{regex: {pattern: 'quok\\w+'}}, {turns: {max: 0}}]}",
    "not": "{not: {keywords: {words: [never]}}}",
    "keywords": "{keywords: {words: [parcel]}}",
    "regex": "{regex: {pattern: 'quok\\w+', in: turns, last: 3}}",
    "turns": "{turns: {min: 2}}",
    "tool": "{tool: {last_tool: [lookup], last_failed: false}}",
    "profile": "{profile: {field: age_band, equals: adult}}",
    "context": "{context: {field: channel, exists: false}}",
    "activation": "{activation: {condition: harmful, threshold: 0.2}}",
}
CONVERSATION = [
    ChatMessage(role="system", content="You serve Wobbleton customers."),
    ChatMessage(role="user", content="My parcel went to a quokka zebrafish sanctuary"),
    ChatMessage(role="assistant", content="Which xylophone order was it?"),
    ChatMessage(role="tool", name="lookup", content="receipt jellyfish umbrellas"),
    ChatMessage(role="user", content="The parcel with the quokkas, marmalade inside"),
]
SECRET = {w for m in CONVERSATION for w in re.findall(r"\w{5,}", m.content.lower())} - {
    "parcel", "customers"}


def _rules() -> str:
    return "\n".join(f"- id: k.{name}\n  when: {cond}" for name, cond in SAMPLES.items())


def test_every_registered_kind_has_a_sample_and_is_in_the_schema() -> None:
    assert set(SAMPLES) == set(kinds())
    schema = json.dumps(BundleSpec.model_json_schema())
    for kind in kinds().values():
        assert kind.model.__name__ in schema


def test_every_kind_holds_and_only_quoting_kinds_quote_the_conversation() -> None:
    d = engine(_rules()).decide(CONVERSATION, UserProfile(user_id="u1", age_band="adult"), None,
                                {"harmful": 0.5})
    assert {m.rule_id for m in d.matched} == {f"k.{n}" for n in SAMPLES}
    for m in d.matched:
        kind = kinds()[m.rule_id.removeprefix("k.")]
        quotes = [e.quote for e in m.evidence if e.quote is not None]
        details = " ".join(e.detail + " " + e.source for e in m.evidence).lower()
        assert not {w for w in SECRET if w in details}, m
        if kind.quotes_text:
            assert quotes, m
        elif kind.children is None:  # composites quote what their branches quote
            assert not quotes, m


def test_without_store_text_no_record_holds_text_any_kind_quoted() -> None:
    d = engine(_rules()).decide(CONVERSATION, UserProfile(user_id="u1", age_band="adult"), None,
                                {"harmful": 0.5})
    item = RequestItem(ids=["c-0", *(f"c-{i + 1}" for i in range(len(d.plan.interventions)))],
                       ts=1_750_000_000_000, decision=d, reports=None, result=None,
                       outcome=Outcome.completed(), request_id=None, session_id=None,
                       user_id=None, model=None, prompt=None, answer=None, trace_id=None,
                       span_id=None, latency_s=None)
    for store_text, leaks in ((False, False), (True, True)):
        builder = RecordBuilder(b"k" * 32, Masker(DEFAULT_MASKS), store_user_id=False,
                                store_text=store_text)
        drafts, err = builder.build(item)
        assert err is None
        stored = json.dumps([x.model_dump(mode="json") for x in drafts]).lower()
        assert bool({w for w in SECRET if w in stored}) is leaks


def test_without_store_user_id_no_record_holds_a_profile_or_context_value() -> None:
    """Profile and context evidence shows the values it read; the audit withholds them (and
    the conversation's text) unless store_user_id (and store_text) is on."""
    rules = """
- id: p.range
  when: {profile: {field: formality_preference, range: {min: 0.5}}}
- id: p.list
  when: {profile: {field: roles, exists: true}}
- id: c.in
  when: {context: {field: channel, in: [chat, sms]}}
- id: k.keywords
  when: {keywords: {words: [parcel]}}
"""
    profile = UserProfile(user_id="u1", roles=("vip",), formality_preference=0.7321)
    d = engine(rules).decide(CONVERSATION, profile, RequestContext(channel="sms"))
    assert set(d.rule_ids) == {"p.range", "p.list", "c.in", "k.keywords"}
    values = ("0.7321", "vip", "'sms'")
    assert all(v in d.explanation for v in values)
    item = RequestItem(ids=["c-0", *(f"c-{i + 1}" for i in range(len(d.plan.interventions)))],
                       ts=1_750_000_000_000, decision=d, reports=None, result=None,
                       outcome=Outcome.completed(), request_id=None, session_id=None,
                       user_id="u1", model=None, prompt=None, answer=None, trace_id=None,
                       span_id=None, latency_s=None)
    for store_user_id in (False, True):
        builder = RecordBuilder(b"k" * 32, Masker(DEFAULT_MASKS), store_user_id=store_user_id,
                                store_text=False)
        drafts, err = builder.build(item)
        assert err is None
        stored = json.dumps([x.model_dump(mode="json") for x in drafts]).lower()
        assert [v in stored for v in values] == [store_user_id] * len(values)
        assert not {w for w in SECRET if w in stored}


def test_an_unknown_kind_names_the_registered_ones() -> None:
    err = load_errors(
        "name: t\nrevision: '1'\nvectors: {v: {layers: [1], strength: 0.1}}\n"
        "rules:\n  - id: r\n    when: {sometimes: {}}\n"
    )
    message = str(err)
    assert "exactly one key" in message
    for name in kinds():
        assert name in message


KIND_MODULE = '''
from __future__ import annotations

from steerguard.policy.conditions import ConditionKind, EvalInput, Node, register
from steerguard.policy.conditions.base import CheckContext, TextSource
from steerguard.policy.decision import Evidence
from steerguard.policy.specbase import Spec


class StartsSpec(TextSource):
    prefix: str


class StartsCond(Spec):
    starts: StartsSpec


def compile_starts(spec: StartsSpec, _compile_child: object) -> Node:
    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        hit = False
        for source, text in inp.texts(spec.in_, spec.last):
            if text.lower().startswith(spec.prefix):
                hit = True
                ev.append(Evidence(predicate="starts", source=source,
                                   quote=text[: len(spec.prefix) + 12]))  # prefix and 12 more
        return hit
    return node


def check_starts(spec: StartsSpec, where: CheckContext) -> list:
    if spec.prefix != spec.prefix.lower():
        return [where.issue(("starts", "prefix"), "prefix must be lower case",
                            value=spec.prefix, expected="a lower-case prefix")]
    return []


register(ConditionKind(name="starts", model=StartsCond, compile=compile_starts,
                       quotes_text=True, check=check_starts))
'''

SCRIPT = '''
import json, sys
sys.path.insert(0, sys.argv[1])
import starts_kind  # registers before the schema is built
from steerguard.audit.build import RecordBuilder, RequestItem
from steerguard.audit.config import DEFAULT_MASKS
from steerguard.audit.masking import Masker
from steerguard.audit.records import Outcome
from steerguard.policy.engine import PolicyEngine
from steerguard.policy.errors import PolicyError
from steerguard.policy.loader import load_bundle_text

HEAD = "name: t\\nrevision: '1'\\nvectors: {v: {layers: [1], strength: 0.1}}\\nrules:\\n"
try:
    load_bundle_text(HEAD + "  - id: r\\n    when: {starts: {prefix: Hello}}\\n", "t.yaml")
except PolicyError as e:
    print("CHECK", e.issues[0].field, e.issues[0].line)
bundle = load_bundle_text(HEAD + "  - id: r\\n    when: {any: [{starts: {prefix: hello}}]}\\n"
                          "    apply: [v]\\n", "t.yaml")
d = PolicyEngine(bundle).decide([{"role": "user", "content": "hello, my zanzibar parcel"}])
print("MATCHED", d.rule_ids, d.matched[0].evidence[0].quote)
item = RequestItem(ids=["a", "b"], ts=1, decision=d, reports=None, result=None,
                   outcome=Outcome.completed(), request_id=None, session_id=None, user_id=None,
                   model=None, prompt=None, answer=None, trace_id=None, span_id=None,
                   latency_s=None)
drafts, _ = RecordBuilder(b"k" * 32, Masker(DEFAULT_MASKS), store_user_id=False,
                          store_text=False).build(item)
print("STORED", "zanzibar" in json.dumps([x.model_dump(mode="json") for x in drafts]))
'''


def test_a_kind_from_another_module_is_one_registration(tmp_path: Path) -> None:
    """A kind defined outside the package: registered, it is in the union, compiles, is
    checked, quotes, and its quotes are withheld by the audit like any other."""
    (tmp_path / "starts_kind.py").write_text(textwrap.dedent(KIND_MODULE))
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "CHECK rules[0].when.starts.prefix 6"
    assert lines[1] == "MATCHED ['r'] hello, my zanziba"
    assert lines[2] == "STORED False"
