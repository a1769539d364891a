"""Masking before write. Any failure raises MaskingError; the caller drops the record."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from steerguard.audit.config import MaskRule
from steerguard.audit.errors import MaskingError

TextMasker = Callable[[str], str]


class Masker:
    """The configured rules, in order, then the custom masker if one is given."""

    def __init__(self, rules: Iterable[MaskRule], extra: TextMasker | None = None) -> None:
        self._rules = [(r.name, re.compile(r.pattern), r.replacement) for r in rules]
        self._extra = extra

    def __call__(self, text: str) -> str:
        for name, pattern, replacement in self._rules:
            try:
                text = pattern.sub(replacement, text)
            except Exception as exc:
                raise MaskingError(f"mask rule {name!r} failed: {exc}") from exc
        if self._extra is None:
            return text
        try:
            out = self._extra(text)
            if not isinstance(out, str):
                raise TypeError(f"returned {type(out).__name__}, not str")
        except Exception as exc:
            raise MaskingError(f"mask rule 'custom masker' failed: {exc}") from exc
        return out
