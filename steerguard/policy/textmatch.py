"""Text predicates: whole-word keywords and regular expressions that cannot stall the engine.

Regexes run under the `regex` module's timeout (REGEX_TIMEOUT_S per search) on at most
MAX_TEXT_CHARS characters, so a catastrophically backtracking pattern such as `(a+)+` costs
a bounded time and fails the evaluation. Keyword lists compile to one alternation of escaped
literals, which `re` matches in time linear in the text.
"""

from __future__ import annotations

import re

import regex

from steerguard.policy.errors import EvaluationError

# Wall-clock, so it must outlast a GIL hand-off (5 ms switch interval) while a generation
# thread runs; a hostile pattern still costs at most this per search.
REGEX_TIMEOUT_S = 0.05
MAX_TEXT_CHARS = 20_000

Span = tuple[int, int]


class KeywordMatcher:
    """Any of `words` (or phrases) as whole words, case-insensitive."""

    def __init__(self, words: list[str]) -> None:
        alts = []
        for w in sorted({w.strip() for w in words if w.strip()}, key=len, reverse=True):
            lit = re.escape(w)
            lit = re.sub(r"(?:\\\s|\s)+", r"\\s+", lit)  # phrases: any run of whitespace
            lit = lit.replace("'", "['\u2019]")  # typed apostrophes vary: can't / can’t
            alts.append(lit)
        # Lookarounds, not \b, so words that start or end with punctuation (c++) still work.
        self._re = re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", re.IGNORECASE)

    def search(self, text: str) -> Span | None:
        m = self._re.search(text)
        return m.span() if m else None


class BoundedRegex:
    """A pattern compiled at load; `search` raises EvaluationError instead of stalling."""

    def __init__(self, pattern: str, ignore_case: bool = True) -> None:
        self.pattern = pattern
        try:
            self._re = regex.compile(pattern, regex.IGNORECASE if ignore_case else 0)
        except regex.error as e:
            raise ValueError(f"invalid regex: {e}") from e

    def search(self, text: str) -> Span | None:
        text = text[:MAX_TEXT_CHARS]
        try:
            m = self._re.search(text, timeout=REGEX_TIMEOUT_S)
        except TimeoutError as e:
            raise EvaluationError(
                f"regex {self.pattern!r} took over {REGEX_TIMEOUT_S * 1000:.0f} ms"
            ) from e
        return m.span() if m else None
