"""Shared fixtures: the real bundled model is loaded once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def real_loaded():
    from steerguard.runtime.loading import load_model

    return load_model()


@pytest.fixture(scope="session")
def real_engine(real_loaded):
    """The bundled SmolLM2 with the shipped concept vectors."""
    from steerguard.resources import concepts_dir
    from steerguard.runtime.engine import SteeringEngine
    from steerguard.vectors.library import VectorLibrary

    engine = SteeringEngine(real_loaded)
    VectorLibrary(real_loaded.fingerprint).load_into(engine, concepts_dir())
    return engine
