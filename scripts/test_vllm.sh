#!/usr/bin/env bash
# The vLLM backend's tests in its own venv (scripts/setup_vllm.sh makes it on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
[ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm" 2>/dev/null || bash scripts/setup_vllm.sh
. scripts/common.sh
run_pytest "$VENV/bin/python" tests/vllm "$@"
