"""Where steerguard keeps what it builds: converted models, vectors, probes, the audit's files."""

from __future__ import annotations

import os
from pathlib import Path


def steerguard_home() -> Path:
    """$STEERGUARD_HOME (with `~` expanded), else ~/.cache/steerguard."""
    env = os.environ.get("STEERGUARD_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steerguard"
