from __future__ import annotations

import hmac
import json
import re
from pathlib import Path
from typing import Any

import pytest

from steerguard.audit.build import RecordBuilder, RequestItem
from steerguard.audit.chain import ChainHead, canonical, record_hash
from steerguard.audit.config import DEFAULT_MASKS, AuditConfig, MaskRule
from steerguard.audit.errors import AuditConfigError, MaskingError
from steerguard.audit.masking import Masker
from steerguard.audit.records import (
    DecisionRecord,
    InterventionRecord,
    Measurement,
    Outcome,
    parse_record,
)
from steerguard.audit.sealed import Sealed
from steerguard.policy.explain import explanation
from steerguard.runtime.report import LayerMeasurement

from . import factories as f


def _item(d, res=None, **kw) -> RequestItem:  # type: ignore[no-untyped-def]
    n = len(res.reports) if res else len(d.plan.interventions)
    base = dict(ids=[f"c-{i}" for i in range(n + 1)], ts=1_750_000_000_000, decision=d,
                reports=res.reports if res else None, result=res, outcome=Outcome.completed(),
                request_id="req-1", session_id="sess-1", user_id="alice", model=f.MODEL,
                prompt="Mail me at kid@example.com", answer=None, trace_id="ab" * 16,
                span_id="cd" * 8, latency_s=None)
    base.update(kw)
    return RequestItem(**base)


def _builder(**kw) -> RecordBuilder:  # type: ignore[no-untyped-def]
    opts = dict(store_user_id=False, store_text=False)
    masker = kw.pop("masker", None)
    opts.update(kw)
    return RecordBuilder(b"k" * 32, Masker(DEFAULT_MASKS, masker), **opts)


def _build(builder: RecordBuilder, item: RequestItem
           ) -> tuple[list[dict[str, Any]], MaskingError | None]:
    drafts, err = builder.build(item)
    return [x.model_dump(mode="json") for x in drafts], err


def test_bodies_match_the_schema_and_link_by_decision_id() -> None:
    d = f.decision()
    bodies, err = _build(_builder(), _item(d, f.result(d)))
    assert err is None and len(bodies) == 3
    chain = ChainHead("c")
    recs = []
    for b in bodies:
        payload, digest = chain.seal(b)
        assert record_hash(payload) == digest
        recs.append(parse_record(payload))
    dec, iv0, iv1 = recs
    assert isinstance(dec, DecisionRecord) and isinstance(iv0, InterventionRecord)
    assert dec.intervention_ids == (iv0.record_id, iv1.record_id)
    assert {r.decision_id for r in recs} == {d.decision_id}
    assert [r.seq for r in recs] == [0, 1, 2] and iv0.prev == record_hash(
        chain_payload(bodies[0]))
    assert dec.rules[0].rule_id == "minor-calm" and dec.prompt_tokens == 31
    assert iv0.measured and iv0.measurements[0].projection_after == 0.35
    report = f.result(d).reports[0]
    assert (iv0.positions_affected, iv0.mean_delta_norm) == (
        report.positions_affected, pytest.approx(report.mean_delta_norm))
    assert iv0.coefficients[10] == pytest.approx(0.248)
    assert dec.trace_id == "ab" * 16 and dec.model == f.MODEL


def test_every_record_names_the_backend_that_generated() -> None:
    d = f.decision()
    for backend in ("hf", "vllm"):
        bodies, _ = _build(_builder(), _item(d, f.result(d), backend=backend))
        chain = ChainHead("c")
        assert {parse_record(chain.seal(b)[0]).backend for b in bodies} == {backend}
    bodies, _ = _build(_builder(), _item(d, None))  # a caller that does not say
    assert parse_record(ChainHead("c").seal(bodies[0])[0]).backend is None


def test_measurements_are_recorded_field_for_field() -> None:
    """An intervention record holds the runtime's measurements as they are: its schema is
    theirs, and the stored record holds each value."""
    assert Measurement is LayerMeasurement
    d = f.decision()
    res = f.result(d)
    bodies, _ = _build(_builder(), _item(d, res))
    for body, report in zip(bodies[1:], res.reports, strict=True):
        assert body["measurements"] == [m.model_dump() for m in report.layers]


def chain_payload(body: dict) -> bytes:  # type: ignore[type-arg]
    from steerguard.audit.chain import canonical

    return canonical(body)


def test_user_is_a_keyed_hash_and_text_is_off_by_default() -> None:
    d = f.decision()
    dec = _build(_builder(), _item(d, f.result(d)))[0][0]
    assert dec["user_ref_kind"] == "hmac" and "alice" not in dec["user_ref"]
    assert dec["content"]["prompt_text"] is None and len(dec["content"]["prompt_hmac"]) == 32
    raw = _build(_builder(store_user_id=True), _item(d))[0][0]
    assert raw["user_ref"] == "alice" and raw["user_ref_kind"] == "raw"


def test_without_store_text_evidence_does_not_quote_the_user() -> None:
    d = f.decision(detail="/(\\d+) years old/ matched", quote="I am 12 years old")
    d = d.model_copy(update={"explanation": explanation(
        d.bundle, d.matched, d.dropped, d.plan.interventions, [], False)})
    assert "I am 12 years old" in d.explanation
    dec = _build(_builder(), _item(d, f.result(d)))[0][0]
    detail = dec["rules"][0]["evidence"][0]["detail"]
    assert detail.startswith("/(\\d+) years old/ matched [text withheld, hmac ")
    assert "12 years" not in str(dec)  # nor in the explanation
    assert dec["rules"][0]["evidence"][0]["span"] == [0, len(d.matched[0].evidence[0].quote)]
    kept = _build(_builder(store_text=True), _item(d, f.result(d)))[0][0]
    assert "I am 12 years old" in kept["rules"][0]["evidence"][0]["detail"]


def test_text_when_configured_is_masked() -> None:
    d = f.decision(quote="reach me on 0044 7700 900123")
    dec = _build(_builder(store_text=True), _item(d, f.result(d)))[0][0]
    assert dec["content"]["prompt_text"] == "Mail me at [EMAIL]"
    assert dec["rules"][0]["evidence"][0]["detail"] == "'reach me on [NUMBER]'"


@pytest.mark.parametrize(("name", "plain", "texts"), [
    ("email", r"[\w.+-]+@[\w-]+\.[\w.-]+", [
        "mail john.doe+x@example.co.uk or jane@ex.org now", "a@b.c", "@x.y", "no address",
        "foo@bar@baz.com a.b@c.d.e@f.g", "x.y-z_" * 50 + "@a.b c@d.e", "a" * 3000,
        "émile@exemple.fr, (bob@host.io)", "a+b.c-d@e-f.g.h."]),
    ("long_number", r"\b(?:\d[ -]?){9,}\d\b", [
        "call 0044 7700 900123 or 123456789012 now", "1234567890", "a1234567890",
        "1234567890a", "12345 67890 1234", "x 1-2-3-4-5-6-7-8-9-0 y", "9" * 400,
        "tel:+44 7700-900-123-45", "_1234567890_", "1234567890_", "12  34567890123",
        "١٢٣٤٥٦٧٨٩٠١", "123456789 -0", "no digits"]),
])
def test_default_mask_rules_mask_what_the_plain_patterns_do(name: str, plain: str,
                                                            texts: list[str]) -> None:
    """They are written to run fast (config.py); the matches are those of the plain ones."""
    import re

    rule = next(r for r in DEFAULT_MASKS if r.name == name)
    masker = Masker([rule])
    for text in texts:
        assert masker(text) == re.sub(plain, rule.replacement, text), text[:40]


def test_a_rule_of_ones_own_masks_its_matches() -> None:
    masker = Masker([MaskRule(name="ticket", pattern=r"T-\d+", replacement="[T]")])
    assert masker("see T-1234 and T-5") == "see [T] and [T]"
    assert masker("see t-1234") == "see t-1234"


def test_a_custom_masker_sees_each_text_after_the_rules() -> None:
    seen: list[str] = []

    def custom(text: str) -> str:
        seen.append(text)
        if "boom" in text:
            raise ValueError("boom")
        return text.upper()

    masker = Masker(DEFAULT_MASKS, custom)
    for _ in range(3):
        assert masker("write to a@b.io") == "WRITE TO [EMAIL]"
    assert seen == ["write to [EMAIL]"] * 3
    for _ in range(2):
        with pytest.raises(MaskingError, match="custom masker"):
            masker("boom")


def test_masking_failure_drops_the_decision_record_only() -> None:
    def broken(text: str) -> str:
        raise RuntimeError("masking service down")

    d = f.decision()
    bodies, err = _build(_builder(store_text=True, masker=broken), _item(d, f.result(d)))
    assert err is not None and "custom masker" in str(err)
    assert [b["kind"] for b in bodies] == ["intervention", "intervention"]
    assert all("Mail me" not in str(b) for b in bodies)


def test_no_reports_records_planned_interventions_unmeasured() -> None:
    d = f.decision()
    bodies, _ = _build(_builder(), _item(d, outcome=Outcome.error(TimeoutError())))
    ivs = [parse_record(ChainHead("c").seal(b)[0]) for b in bodies[1:]]
    assert [iv.measured for iv in ivs] == [False, False]
    assert bodies[0]["outcome"] == {"status": "error", "error_type": "TimeoutError"}


def test_keyed_hash_is_hmac_sha256_of_domain_and_value() -> None:
    for key in (b"", b"k" * 32, b"\xff" * 64, b"long key " * 20):
        builder = RecordBuilder(key, Masker(()), store_user_id=False, store_text=False)
        for value in ("", "alice", "évidence" * 50):
            expected = hmac.digest(key, f"user\0{value}".encode(), "sha256").hex()[:32]
            assert builder.keyed_hash("user", value) == expected


def test_stored_records_are_indexed_as_built() -> None:
    """Records replayed from the spill file are indexed and counted as when first built, and
    their stored bytes are the canonical JSON of the record they parse to."""
    for d, kw in ((f.decision(), {}), (f.decision(2), {"outcome": Outcome.cancelled()}),
                  (f.decision(3), {"session_id": None, "user_id": None})):
        drafts, _ = _builder().build(_item(d, f.result(d), **kw))
        # the writer seals a request's records together; each one alone seals the same
        one_by_one = [Sealed.seal(head, draft) for head in [ChainHead("c")] for draft in drafts]
        together = Sealed.seal_request(ChainHead("c"), drafts)
        assert together == one_by_one
        for draft, sealed in zip(drafts, together, strict=True):
            stored = Sealed.read(sealed.hash, sealed.payload)
            assert stored == sealed
            record = parse_record(sealed.payload)
            assert canonical(record.model_dump(mode="json")) == sealed.payload
            assert record.model_dump(exclude={"chain", "seq", "prev"}) == draft.model_dump()
    dec, iv = (Sealed.seal(ChainHead("c"), draft) for draft in drafts[:2])
    assert not any(i.startswith(("u:", "s:", "o:")) for i in dec.indexes)
    assert iv.indexes[-1] == "v:" + drafts[1].vector


def test_only_uncommon_outcomes_are_indexed() -> None:
    d = f.decision()
    done = Sealed.seal(ChainHead("c"), _builder().build(_item(d, f.result(d)))[0][0])
    failed = Sealed.seal(ChainHead("c"),
                         _builder().build(_item(d, outcome=Outcome.error(TimeoutError())))[0][0])
    assert not any(i.startswith("o:") for i in done.indexes)
    assert "o:error" in failed.indexes
    assert any(a.endswith("\0o:completed") for a in done.aggs)  # still counted


def test_config_env_file_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_file = tmp_path / "steerguard.yml"
    cfg_file.write_text("audit:\n  key_prefix: fromfile\n  overflow: block\n")
    monkeypatch.setenv("STEERGUARD_REDIS_URL", "redis://example:6379/1")
    cfg = AuditConfig.load(cfg_file)
    assert (cfg.key_prefix, cfg.overflow, cfg.redis_url) == (
        "fromfile", "block", "redis://example:6379/1")
    monkeypatch.setenv("STEERGUARD_AUDIT_OVERFLOW", "explode")
    with pytest.raises(AuditConfigError, match="overflow"):
        AuditConfig.load(cfg_file)


def test_mask_rules_from_a_config_file(tmp_path: Path) -> None:
    cfg_file = tmp_path / "steerguard.yml"
    rule = "audit:\n  mask_rules:\n    - name: ticket\n      pattern: 'T-\\d+'\n"
    cfg_file.write_text(rule + "      replacement: '[TICKET]'\n")
    cfg = AuditConfig.load(cfg_file)
    assert Masker(cfg.mask_rules)("see T-42, not t-42") == "see [TICKET], not t-42"
    cfg_file.write_text(rule + "      requires: 'T-'\n")  # a rule cannot be made optional
    with pytest.raises(AuditConfigError, match=r"mask_rules\.0\.requires"):
        AuditConfig.load(cfg_file)
    cfg_file.write_text("audit:\n  mask_rules:\n    - name: bad\n      pattern: '(unclosed'\n")
    with pytest.raises(AuditConfigError, match="does not compile"):
        AuditConfig.load(cfg_file)


ROLES = {"system", "user", "assistant", "tool"}  # message sources name the role
QUOTING_RULES = """
- id: r1
  when: {keywords: {words: [refund]}}
  apply: [caution]
- id: r2
  when: {regex: {pattern: '\\w+ matched \\w+'}}
  apply: [empathy]
- id: r3
  when: {keywords: {words: [assistant], in: system}}
  apply: [concise]
- id: r4
  when: {regex: {pattern: 'w\\w+', in: turns, last: 3}}
  apply: [formal]
- id: r5
  when: {regex: {pattern: 'r\\w+', in: tool_result}}
- id: r6
  when: {all: [{regex: {pattern: 'call \\d+'}}, {not: {keywords: {words: [never]}}}]}
"""

CONVERSATIONS = [
    [("system", "You are a helpful assistant for Wobbleton Ltd."),
     ("user", "Please refund me: the zebra matched my quokka, call 5550123 xylophone"),
     ("assistant", "Which order was that, winsome traveller?"),
     ("tool", "receipt R-88 for jellyfish umbrellas"),
     ("user", "Refund the wombat order 'matched' quickly, call 77")],
    [("user", "zzz matched zzz refund"), ("tool", "rutabaga")],
]


@pytest.mark.parametrize("conversation", CONVERSATIONS)
def test_without_store_text_no_record_holds_user_text(conversation) -> None:  # type: ignore[no-untyped-def]
    from steerguard.policy.inputs import ChatMessage
    from tests.policy.helpers import bundle_yaml, engine

    messages = [ChatMessage(role=r, content=c, name="lookup" if r == "tool" else None)
                for r, c in conversation]
    d = engine(QUOTING_RULES).decide(messages, None, None, {"harmful": 0.0})
    assert {e.quote for m in d.matched for e in m.evidence} - {None}  # something was quoted
    policy_words = set(re.findall(r"\w+", bundle_yaml(QUOTING_RULES).lower()))
    words = {w for _, text in conversation for w in re.findall(r"\w+", text.lower())}
    secret = {w for w in words if len(w) > 3 and w not in policy_words | ROLES}
    bodies, err = _build(_builder(), _item(d, prompt=None))
    assert err is None
    stored = json.dumps(bodies).lower()
    assert not {w for w in secret if w in stored}
    kept = json.dumps(_build(_builder(store_text=True), _item(d, prompt=None))[0]).lower()
    assert {w for w in secret if w in kept}  # the same records quote it when configured
