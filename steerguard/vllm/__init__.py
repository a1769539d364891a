"""Steering inside vLLM: a general plugin that applies per-request plans in vLLM's workers.

Importing this package does not import vLLM; `steerguard.vllm.plugin.register` (the
`vllm.general_plugins` entry point) and `steerguard.vllm.backend` do.
"""
