"""`keywords: {words, in, last}`: any of the words or phrases, as whole words, ignoring case.
The evidence quotes the matched text."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from steerguard.policy.conditions.base import (
    CompileChild,
    ConditionKind,
    EvalInput,
    Node,
    TextSource,
)
from steerguard.policy.decision import Evidence
from steerguard.policy.specbase import Spec
from steerguard.policy.textmatch import KeywordMatcher


class KeywordsSpec(TextSource):
    words: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)


class KeywordsCond(Spec):
    keywords: KeywordsSpec


def compile_keywords(spec: KeywordsSpec, _: CompileChild) -> Node:
    matcher = KeywordMatcher(spec.words)

    def node(inp: EvalInput, ev: list[Evidence]) -> bool:
        hit = False
        for source, text in inp.texts(spec.in_, spec.last):
            span = matcher.search(text)
            if span:
                hit = True
                ev.append(Evidence(predicate="keywords", source=source,
                                   quote=text[span[0] : span[1]], span=span))
        return hit

    return node


KINDS = (
    ConditionKind(name="keywords", model=KeywordsCond, compile=compile_keywords,
                  quotes_text=True),
)
