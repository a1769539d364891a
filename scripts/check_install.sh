#!/usr/bin/env bash
# steerguard as users install it: build the wheel, install it (not editable) into a new
# venv, and from a directory outside the source tree validate and test the shipped bundle,
# run the demo and answer through SteeredChatModel() on the shipped vectors.
# The new venv reads its dependencies from .venv (one .pth line) rather than installing them
# again, which takes minutes; what is checked is the wheel: its files, data and script.
# Needs .venv (bash scripts/setup.sh). CI runs it after the tests (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. scripts/common.sh

echo "building the wheel"
quiet .venv/bin/python -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" .
.venv/bin/python -m venv "$work/venv"  # the same Python, so the .pth line fits
deps=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$site/steerguard-deps.pth"  # appended after the venv's own site-packages
quiet "$work/venv/bin/python" -m pip install --quiet --no-deps --no-compile "$work"/dist/*.whl

# A fresh home, so the vectors must come from the wheel; the converted model is reused.
home="$work/home"
mkdir -p "$home"
cache="${STEERGUARD_HOME:-$HOME/.cache/steerguard}/models"
if [ -d "$cache" ]; then ln -s "$cache" "$home/models"; fi
mkdir "$work/elsewhere"
cd "$work/elsewhere"
export STEERGUARD_HOME="$home" PATH="$work/venv/bin:$PATH"

"$work/venv/bin/python" - "$site" "$src" <<'EOF'
import sys
from pathlib import Path

import steerguard
from steerguard.resources import default_bundle_path, shipped_vectors_dir

site, src = Path(sys.argv[1]), Path(sys.argv[2])
for path in (Path(steerguard.__file__), default_bundle_path(), shipped_vectors_dir()):
    assert path.is_relative_to(site) and not path.is_relative_to(src), path
print(f"installed: {Path(steerguard.__file__).parent}")
EOF
steerguard policy validate
steerguard policy test > "$work/policy-test.txt" || { cat "$work/policy-test.txt"; exit 1; }
tail -n 1 "$work/policy-test.txt"
steerguard demo --max-tokens 2 --json > "$work/demo.json"
"$work/venv/bin/python" - "$work/demo.json" "$home" <<'EOF'
import json
import sys
from pathlib import Path

audit = json.loads(Path(sys.argv[1]).read_text())["audit"]
assert audit["chain_verified"] and audit["decisions"] == 6, audit
from steerguard.langchain import SteeredChatModel
from steerguard.resources import shipped_vectors_dir

shipped = sorted((shipped_vectors_dir() / "smollm2-135m").glob("*.safetensors"))
home = Path(sys.argv[2]) / "vectors" / "smollm2-135m"
assert len(shipped) == 6 and all((home / p.name).read_bytes() == p.read_bytes() for p in shipped)
print(f"demo: {audit['records']} audit records, chain verified; the wheel's 6 vectors copied")

reply = SteeredChatModel(audit=False, max_tokens=4).invoke("I was charged three times!")
print(f"SteeredChatModel(): {reply.content!r}, rules {reply.response_metadata['steerguard']['rules']}")
EOF
echo "the installed package works from $(pwd)"
