"""Paths a bundle names (its concepts folder, condition datasets) stay inside its policy folder:
the folder that holds the bundle, where the shipped layout keeps the datasets bundles share
(policies/support/bundle.yaml names ../concepts and ../conditions/<name>)."""

from __future__ import annotations

from pathlib import Path

BUNDLE_FILE = "bundle.yaml"


def bundle_file(path: str | Path) -> Path:
    """The YAML file of a bundle given as a folder (its bundle.yaml) or as the file itself."""
    p = Path(path)
    return p / BUNDLE_FILE if p.is_dir() else p


def policy_root(file: Path) -> Path:
    """The policy folder of a bundle's YAML file: the folder above a bundle folder
    (<root>/<bundle>/bundle.yaml), the file's own folder for a single-file bundle."""
    folder = Path(file).absolute().parent
    return (folder.parent if Path(file).name == BUNDLE_FILE else folder).resolve()


def resolve_inside(root: Path, base: Path, value: str) -> tuple[Path | None, str | None]:
    """`value` relative to `base`, symlinks resolved: (path, None) when it stays inside
    `root`, else (None, what is wrong with it)."""
    if "\x00" in value:
        return None, "holds a NUL character"
    if Path(value).is_absolute():
        return None, "is an absolute path"
    try:
        resolved = (base / value).resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop
        return None, f"cannot be resolved ({e})"
    if not resolved.is_relative_to(root):
        return None, f"leads outside the policy folder {root}"
    return resolved, None
