"""One vLLM engine for the whole session (starting one takes a minute on CPU), beside the HF
engine it is compared with. Tests that need vLLM skip where it is not installed (it lives in a
venv of its own: scripts/setup_vllm.sh)."""

from __future__ import annotations

import importlib.util

import pytest

# The server's fixtures, for `steerguard serve --backend vllm` (test_serve.py).
from tests.server.conftest import audit_prefix, store  # noqa: F401

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(
    not HAS_VLLM, reason="vllm is not installed here; run tests/vllm in the venv that "
    "scripts/setup_vllm.sh makes"
)

PROMPTS = [
    "Describe your weekend in two sentences.",
    "What is a good name for a cat?",
    "How do I bake bread at home?",
    "Explain what a rainbow is to a child.",
    "Write a short note thanking a colleague.",
    "What should I pack for a beach trip?",
    "Give me one tip for learning to cook.",
    "Why do leaves change colour in autumn?",
    "Suggest a name for a small coffee shop.",
    "How can I sleep better at night?",
]


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="session")
def vllm_root():
    """A composition root on `backend: vllm`: it builds the VllmBackend and loads its vectors
    (the shipped ones, as the HF engine's), and closes it."""
    if not HAS_VLLM:
        pytest.skip("vllm is not installed")
    from steerguard.config import SteerguardConfig
    from steerguard.root import Steerguard

    root = Steerguard(SteerguardConfig.load(backend="vllm", audit_enabled=False))
    yield root
    root.close()


@pytest.fixture(scope="session")
def vllm_backend(vllm_root, real_engine):
    from steerguard.vllm.backend import VllmBackend

    backend = vllm_root.engine()
    assert isinstance(backend, VllmBackend)
    assert {n: v.content_hash() for n, v in backend.vectors.items()} == {
        n: v.content_hash() for n, v in real_engine.vectors.items()}
    return backend
