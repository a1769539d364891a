"""The data shipped inside the package: policy bundles, concept and condition datasets, and
the bundled model's concept vectors. Found through importlib.resources, so a source tree, an
editable install and a wheel all resolve to the same files."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from steerguard.errors import SteerguardError


def policies_dir() -> Path:
    """steerguard/policies: the shipped bundles and everything they refer to."""
    root = files("steerguard") / "policies"
    # Bundles refer to their datasets by relative path, so they must be real files (a
    # wheel installs as files; only a zipped import would not be).
    if not isinstance(root, Path) or not root.is_dir():
        raise SteerguardError(
            f"the shipped policies are missing from the installed package ({root}); "
            "reinstall steerguard from a wheel or a source checkout, not as a zip"
        )
    return root


def default_bundle_path() -> Path:
    """The shipped support bundle."""
    return policies_dir() / "support"


def concepts_dir() -> Path:
    """The shipped concept datasets (contrastive pairs per concept)."""
    return policies_dir() / "concepts"


def conditions_dir() -> Path:
    """The shipped activation-condition datasets."""
    return policies_dir() / "conditions"


def shipped_vectors_dir() -> Path:
    """Concept vectors built from the shipped concepts, one folder per model (as in a
    VectorLibrary root): the bundled model's vectors, so a first run need not build them."""
    return policies_dir() / "vectors"
