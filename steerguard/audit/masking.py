"""Masking before write. Any failure raises MaskingError; the caller drops the record."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from steerguard.audit.config import MaskRule
from steerguard.audit.errors import MaskingError

TextMasker = Callable[[str], str]


class Masker:
    def __init__(self, rules: Iterable[MaskRule], extra: TextMasker | None = None) -> None:
        self._rules = [(r.name, re.compile(r.pattern), r.replacement, r.requires)
                       for r in rules]
        self._extra = extra

    def __call__(self, text: str) -> str:
        name = "?"
        try:
            for rule_name, pattern, replacement, requires in self._rules:
                if requires is not None and requires not in text:
                    continue
                name = rule_name
                text = pattern.sub(replacement, text)
            if self._extra is not None:
                name = "custom masker"
                out = self._extra(text)
                if not isinstance(out, str):
                    raise TypeError(f"returned {type(out).__name__}, not str")
                text = out
        except Exception as exc:
            raise MaskingError(f"mask rule {name!r} failed: {exc}") from exc
        return text
