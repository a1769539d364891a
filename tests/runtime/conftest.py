"""A tiny random Llama with the vectors `a` and `b`, built once per test module."""

from __future__ import annotations

import pytest

from tests.models import tiny_model
from tests.runtime.helpers import engine_with_vectors


@pytest.fixture(scope="module")
def loaded():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def engine(loaded):
    return engine_with_vectors(loaded, "a", "b")
