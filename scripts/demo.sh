#!/usr/bin/env bash
# Fresh machine -> the demo: set up, then `steerguard demo` (extra arguments are passed on).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/steerguard demo "$@"
