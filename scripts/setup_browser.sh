#!/usr/bin/env bash
# The browser the dashboard tests drive (tests/oversight/test_browser.py): Debian's chromium,
# through Playwright from the dev extra. Playwright's own browser download is never used.
# Dev and CI only; the demo needs no browser.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "chromium is missing and apt-get needs root: install the chromium package" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo installed)"
