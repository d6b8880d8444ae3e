"""Find artifacts by name: the built-in ones shipped as package data, and the local store.

The store is `$LIFECYCLE_HOME/artifacts` (default `~/.lifecycle/artifacts`). Stages write there when no
`--output` is given. Any command that takes a model accepts a built-in name, a store name or a path.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

from lifecycle.artifact import MANIFEST, Artifact
from lifecycle.errors import UserError

BUILTIN_DIR = Path(__file__).parent / "builtin"
DEFAULT_BASE = "tiny-arith"


def home() -> Path:
    return Path(os.environ.get("LIFECYCLE_HOME", "~/.lifecycle")).expanduser()


def store_dir() -> Path:
    return home() / "artifacts"


def default_output(stage: str) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return store_dir() / f"{stage}-{stamp}"


def _candidates(extra_dirs: list[Path] | None = None) -> list[tuple[Path, bool]]:
    found: list[tuple[Path, bool]] = []
    roots = [(BUILTIN_DIR, True), (store_dir(), False)] + [(Path(d), False) for d in extra_dirs or []]
    for root, builtin in roots:
        if root.is_dir():
            for child in sorted(root.iterdir()):
                if (child / MANIFEST).is_file() and not child.name.startswith("."):
                    found.append((child, builtin))
    return found


def resolve(spec: str | os.PathLike, verify: bool = True) -> Artifact:
    """A path, a built-in name or a store name -> a verified Artifact."""
    path = Path(spec).expanduser()
    if path.is_dir():  # an artifact, or a plain Hugging Face checkpoint folder
        return Artifact.load(path, verify=verify)
    for candidate, _ in _candidates():
        if candidate.name == str(spec):
            return Artifact.load(candidate, verify=verify)
    names = ", ".join(c.name for c, _ in _candidates()) or "none"
    raise UserError(f"no model or artifact named '{spec}' (known: {names}; or give a directory path)")


def list_models(extra_dirs: list[Path] | None = None) -> list[dict]:
    """One row per artifact: name, path, format, size, parent, builtin, created."""
    rows = []
    for path, builtin in _candidates(extra_dirs):
        art = Artifact.load(path, verify=False)
        rows.append({
            "name": art.name if builtin else path.name,
            "path": str(path.resolve()),
            "format": art.format,
            "size": art.size_bytes(),
            "parent": (art.parent or {}).get("path"),
            "builtin": builtin,
            "created": art.created_by.get("created_at"),
        })
    return rows


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
