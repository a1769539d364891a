#!/usr/bin/env bash
# Fresh machine -> the whole test suite (unit tests on tiny models, real-model tests, Redis).
# Needs a Redis at 127.0.0.1:6379 (tests use their own key prefixes and delete only their keys).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
