"""The `vllm.general_plugins` entry point: vLLM calls `register` in every process it starts
(the API process, the engine core, each worker), so it must be cheap and idempotent."""

from __future__ import annotations


def register() -> None:
    from steerguard.vllm.admission import install_front_door, install_salt
    from steerguard.vllm.worker import install_runner_hooks

    install_front_door()
    install_salt()
    install_runner_hooks()
