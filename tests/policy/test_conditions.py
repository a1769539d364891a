"""Conditions: text, tools, profile, context, activation, and their combinations."""

from __future__ import annotations

import pytest

from steerguard.policy.inputs import ChatMessage, RequestContext, ToolCall, ToolState, UserProfile

from .helpers import engine

ADULT = UserProfile(user_id="u", age_band="adult")
SCORES = {"harmful": 0.1}


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def rule(when: str) -> str:
    return f"- id: r\n  when: {when}\n  apply: [empathy]\n"


def matches(
    when: str, messages: list[ChatMessage], profile: UserProfile | None = ADULT, **kw: object
) -> bool:
    d = engine(rule(when)).decide(messages, profile, kw.get("context"), kw.get("scores", SCORES))  # type: ignore[arg-type]
    assert not d.failed_closed, d.error
    return d.rule_ids == ["r"]


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("I feel SAD today", True),
        ("sadness is different", False),
        ("so sad.", True),
        ("I'm at my wits   end", True),
        ("at my wit's end", False),
    ],
)
def test_keywords_whole_words_case_insensitive(text: str, hit: bool) -> None:
    assert matches("{keywords: {words: [sad, at my wits end]}}", user(text)) is hit


def test_keyword_evidence_has_span_and_source() -> None:
    d = engine(rule("{keywords: {words: [refund]}}")).decide(
        user("I want a Refund now"), ADULT, None, SCORES
    )
    (ev,) = d.matched[0].evidence
    assert ev.predicate == "keywords" and ev.source == "message[0].user"
    assert ev.span == (9, 15) and ev.quote == "Refund" and ev.describe() == "'Refund'"


def test_text_sources_user_system_turns() -> None:
    msgs = [
        ChatMessage(role="system", content="You are a bank assistant."),
        ChatMessage(role="user", content="my card is stolen"),
        ChatMessage(role="assistant", content="I can help."),
        ChatMessage(role="user", content="thanks"),
    ]
    assert not matches("{keywords: {words: [stolen]}}", msgs)  # latest user message only
    assert matches("{keywords: {in: turns, last: 3, words: [stolen]}}", msgs)
    assert not matches("{keywords: {in: turns, last: 2, words: [stolen]}}", msgs)
    assert matches("{keywords: {in: system, words: [bank]}}", msgs)


def test_regex_and_turn_count() -> None:
    assert matches(r"{regex: {pattern: '\border\s+#?\d{4,}\b'}}", user("where is order #12345"))
    assert not matches(r"{regex: {pattern: 'ORDER', ignore_case: false}}", user("order"))
    two_turns = [*user("a"), ChatMessage(role="assistant", content="b"), *user("c")]
    assert matches("{turns: {min: 2}}", two_turns)
    assert not matches("{turns: {max: 1}}", two_turns)


def test_tool_state_from_messages() -> None:
    call = ChatMessage(role="assistant", tool_calls=(ToolCall(name="delete_account"),))
    asked = [*user("delete me"), call]
    assert matches("{tool: {requested: [delete_account]}}", asked)
    # a user turn after the request means the request is no longer pending
    assert not matches("{tool: {requested: [delete_account]}}", asked + user("never mind"))
    result = ChatMessage(role="tool", name="delete_account", content="boom", status="error")
    failed = [*asked, result]
    assert matches("{tool: {last_failed: true, last_tool: [delete_account]}}", failed)
    assert not matches("{tool: {last_failed: false}}", failed)
    assert not matches("{tool: {last_failed: false}}", user("hi"))  # no tool result at all
    assert matches("{keywords: {in: tool_result, words: [boom]}}", failed)


def test_tool_state_from_context_wins() -> None:
    ctx = RequestContext(tool_state=ToolState(requested=("close_account",)))
    assert matches("{tool: {requested: [close_account]}}", user("hi"), context=ctx)


@pytest.mark.parametrize(
    ("when", "profile", "hit"),
    [
        (
            "{profile: {field: age_band, equals: minor}}",
            UserProfile(user_id="u", age_band="minor"),
            True,
        ),
        ("{profile: {field: age_band, equals: minor}}", ADULT, False),
        ("{profile: {field: age_band, in: [minor, adult]}}", ADULT, True),
        ("{profile: {field: age_band, exists: false}}", UserProfile(user_id="u"), True),
        (
            "{profile: {field: roles, equals: vip}}",
            UserProfile(user_id="u", roles=("customer", "vip")),
            True,
        ),
        (
            "{profile: {field: roles, in: [vip]}}",
            UserProfile(user_id="u", roles=("customer",)),
            False,
        ),
        (
            "{profile: {field: formality_preference, range: {min: 0.5}}}",
            UserProfile(user_id="u", formality_preference=0.7),
            True,
        ),
        (
            "{profile: {field: formality_preference, range: {max: 0.5}}}",
            UserProfile(user_id="u", formality_preference=0.7),
            False,
        ),
        (
            "{profile: {field: preferences.register, equals: formal}}",
            UserProfile(user_id="u", preferences={"register": "formal"}),
            True,
        ),
        (
            "{profile: {field: consent.personalization, equals: true}}",
            UserProfile(user_id="u"),
            False,
        ),
        ("{profile: {field: age_band, exists: true}}", None, False),
    ],
)
def test_profile_predicates(when: str, profile: UserProfile | None, hit: bool) -> None:
    assert matches(when, user("hi"), profile) is hit


def test_context_predicate() -> None:
    assert matches(
        "{context: {field: channel, equals: sms}}",
        user("hi"),
        context=RequestContext(channel="sms"),
    )
    assert not matches("{context: {field: channel, equals: sms}}", user("hi"))


def test_all_any_not_and_evidence() -> None:
    when = (
        "{all: [{keywords: {words: [help]}},"
        " {not: {profile: {field: age_band, equals: minor}}},"
        " {any: [{keywords: {words: [now]}}, {keywords: {words: [asap]}}]}]}"
    )
    d = engine(rule(when)).decide(user("help me now asap"), ADULT, None, SCORES)
    preds = [e.predicate for e in d.matched[0].evidence]
    assert preds == ["keywords", "not", "keywords", "keywords"]  # any keeps every branch that held
    assert not matches(when, user("help me now"), UserProfile(user_id="u", age_band="minor"))
    assert not matches(when, user("help me later"))


@pytest.mark.parametrize(
    ("score", "threshold", "hit"),
    [(0.5, "auto", True), (0.49, "auto", False), (0.8, "0.9", False), (0.95, "0.9", True)],
)
def test_activation_threshold(score: float, threshold: str, hit: bool) -> None:
    when = f"{{activation: {{condition: harmful, threshold: {threshold}}}}}"
    assert matches(when, user("x"), scores={"harmful": score}) is hit


def test_evaluation_errors_fail_closed_or_open() -> None:
    when = "{any: [{activation: {condition: harmful}}, {keywords: {words: [sad]}}]}"
    closed = engine(rule(when)).decide(user("sad"), ADULT)
    assert (
        closed.failed_closed
        and closed.plan.is_empty
        and "no activation score" in (closed.error or "")
    )
    opened = engine(rule(when), on_error="open").decide(user("sad"), ADULT)
    assert not opened.failed_closed and opened.rule_ids == ["r"]
    assert "no activation score for 'harmful'" in (opened.error or "")
    bad = engine(rule(when)).decide(user("x"), ADULT, None, {"harmful": 7.0})
    assert bad.failed_closed and "not in [0, 1]" in (bad.error or "")
