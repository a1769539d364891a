"""Text predicates: whole-word keywords and regular expressions that cannot stall the engine.

Regexes run under the `regex` module's timeout (REGEX_TIMEOUT_S per search) on at most
MAX_TEXT_CHARS characters. Without the `regex` module they fall back to `re` with a shorter
input cap and patterns with nested quantifiers (the catastrophic-backtracking shape, e.g.
`(a+)+`) are rejected at load. Keyword lists compile to one alternation of escaped literals,
which `re` matches in time linear in the text.
"""

from __future__ import annotations

import re

from steerguard.policy.errors import EvaluationError

try:  # `regex` is a transformers dependency, so normally present.
    import regex as _regex
except ImportError:  # pragma: no cover - exercised only without the module
    _regex = None

HAS_TIMEOUT = _regex is not None
# Wall-clock, so it must outlast a GIL hand-off (5 ms switch interval) while a generation
# thread runs; a hostile pattern still costs at most this per search.
REGEX_TIMEOUT_S = 0.05
MAX_TEXT_CHARS = 20_000 if HAS_TIMEOUT else 2_000

_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)\s*[+*{]")
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
        if _regex is not None:
            try:
                self._re = _regex.compile(pattern, _regex.IGNORECASE if ignore_case else 0)
            except _regex.error as e:
                raise ValueError(f"invalid regex: {e}") from e
        else:
            try:
                self._re = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
            except re.error as e:
                raise ValueError(f"invalid regex: {e}") from e
            if _NESTED_QUANTIFIER.search(pattern):
                raise ValueError(
                    "nested quantifiers such as (a+)+ can backtrack catastrophically and the "
                    "'regex' module (which bounds run time) is not installed"
                )

    def search(self, text: str) -> Span | None:
        text = text[:MAX_TEXT_CHARS]
        if _regex is None:
            m = self._re.search(text)
            return m.span() if m else None
        try:
            m = self._re.search(text, timeout=REGEX_TIMEOUT_S)
        except TimeoutError as e:
            raise EvaluationError(
                f"regex {self.pattern!r} took over {REGEX_TIMEOUT_S * 1000:.0f} ms"
            ) from e
        return m.span() if m else None
