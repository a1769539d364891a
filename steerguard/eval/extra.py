"""The `eval` extra: packages that only `steerguard eval` needs, imported when it runs."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from steerguard.errors import SteerguardError

# importable name -> distribution in the extra
EVAL_PACKAGES = {"vaderSentiment": "vaderSentiment", "matplotlib": "matplotlib"}
_HINT = "pip install 'steerguard[eval]' (bash scripts/setup.sh installs it)"


def _missing(name: str) -> SteerguardError:
    package = EVAL_PACKAGES.get(name.split(".")[0], name)
    return SteerguardError(f"{package} is not installed; evaluation needs the eval extra: {_HINT}")


def eval_module(name: str) -> ModuleType:
    """Import a module of the eval extra, or say which extra to install."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise _missing(name) from exc


def require_eval_extra() -> None:
    """Fail before any work when a package of the extra is missing."""
    for name in EVAL_PACKAGES:
        if importlib.util.find_spec(name) is None:
            raise _missing(name)
