"""`keywords: {words, in, last}`: any of the words or phrases, as whole words, ignoring case.
The evidence quotes the matched text."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from steerguard.policy.conditions.base import (
    CompileChild,
    ConditionKind,
    Node,
    TextSource,
    text_search,
)
from steerguard.policy.specbase import Spec
from steerguard.policy.textmatch import KeywordMatcher


class KeywordsSpec(TextSource):
    words: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)


class KeywordsCond(Spec):
    keywords: KeywordsSpec


def compile_keywords(spec: KeywordsSpec, _: CompileChild) -> Node:
    return text_search(spec, KeywordMatcher(spec.words).search, "keywords")


KINDS = (
    ConditionKind(name="keywords", model=KeywordsCond, compile=compile_keywords,
                  quotes_text=True),
)
