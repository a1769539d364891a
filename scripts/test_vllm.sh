#!/usr/bin/env bash
# The vLLM backend's tests in its own venv (scripts/setup_vllm.sh makes it on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
[ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm" 2>/dev/null || bash scripts/setup_vllm.sh
set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/vllm "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
