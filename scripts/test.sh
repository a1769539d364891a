#!/usr/bin/env bash
# Fresh machine -> the whole test suite (unit tests on tiny models, real-model tests, Redis).
# Needs a Redis at 127.0.0.1:6379 (tests use their own key prefixes and delete only their keys).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
bash scripts/setup_browser.sh  # Debian's chromium for the dashboard's browser tests
. scripts/common.sh
run_pytest .venv/bin/python "$@"
