"""Regenerate docs/results.md from stored results (no model needed).

    python scripts/make_results.py                      # from docs/figures/eval.json
    python scripts/make_results.py .steerguard/eval     # take a fresh `steerguard eval` first
"""

from __future__ import annotations

import sys
from pathlib import Path

from steerguard.eval.report import write_report

if __name__ == "__main__":
    print(f"wrote {write_report(Path(sys.argv[1]) if len(sys.argv) > 1 else None)}")
