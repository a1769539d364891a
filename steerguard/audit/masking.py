"""Masking before write. Any failure raises MaskingError; the caller drops the record."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from steerguard.audit.config import MaskRule
from steerguard.audit.errors import MaskingError

TextMasker = Callable[[str], str]

# What the rules made of recent short texts. A policy's explanations and evidence repeat
# request after request (quotes of user text are keyed hashes by then), and scanning one
# with the rules costs microseconds; prompts and answers (with store_text) rarely repeat,
# and long ones are not kept.
_CACHE_ENTRIES = 2048
_CACHE_MAX_CHARS = 1024


class Masker:
    def __init__(self, rules: Iterable[MaskRule], extra: TextMasker | None = None) -> None:
        self._rules = [(r.name, re.compile(r.pattern), r.replacement) for r in rules]
        self._extra = extra
        self._done: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        masked = self._done.get(text)
        if masked is None:
            masked = self._apply_rules(text)
            if len(text) <= _CACHE_MAX_CHARS:
                if len(self._done) >= _CACHE_ENTRIES:
                    self._done.clear()
                self._done[text] = masked
        if self._extra is None:
            return masked
        try:  # a custom masker is called every time: it may count, or look elsewhere
            out = self._extra(masked)
            if not isinstance(out, str):
                raise TypeError(f"returned {type(out).__name__}, not str")
        except Exception as exc:
            raise MaskingError(f"mask rule 'custom masker' failed: {exc}") from exc
        return out

    def _apply_rules(self, text: str) -> str:
        for name, pattern, replacement in self._rules:
            try:
                text = pattern.sub(replacement, text)
            except Exception as exc:
                raise MaskingError(f"mask rule {name!r} failed: {exc}") from exc
        return text
