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


def hub_snapshot(repo_id: str) -> Path:
    """The local Hugging Face cache's copy of a model id (never downloads), or a UserError saying how to get it."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise UserError(f"'{repo_id}' looks like a Hugging Face model id, and huggingface_hub is not installed; "
                        "pass a checkpoint folder instead") from None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError):
        raise UserError(f"no model or artifact named '{repo_id}': no such folder, built-in or store name, and as a "
                        "model id it is not in the local Hugging Face cache (lifecycle never downloads; fetch it where "
                        f"there is network with `hf download {repo_id}` and copy ~/.cache/huggingface, or pass the "
                        "checkpoint folder)") from None


def resolve(spec: str | os.PathLike, verify: bool | str = True) -> Artifact:
    """A path, a built-in name, a store name, or a Hugging Face model id already in the local HF cache ->
    a verified Artifact. `verify="full"` re-hashes every byte."""
    path = Path(spec).expanduser()
    if path.is_dir():  # an artifact, or a plain Hugging Face checkpoint folder
        return Artifact.load(path, verify=verify)
    for candidate, _ in _candidates():
        if candidate.name == str(spec):
            return Artifact.load(candidate, verify=verify)
    text = str(spec)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")) and all(text.split("/")):
        return Artifact.load(hub_snapshot(text), verify=verify)
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


ARITH_PRESETS = ("tiny-arith", "micro")


def task_profile(art: Artifact) -> str:
    """'arith' if the artifact descends from a model this project pretrained on synthetic sums (the built-in
    demo), else 'generic'. Defaults that mention sums (probe prompts, calibration, smoke tests) apply only to
    'arith'; every other model gets the generic built-in text set or the release's own data.

    Walks the lineage through `base` (adapters) and `parent` references, reading each manifest without
    hashing; a link whose folder is gone ends the walk.
    """
    import json

    manifest, seen = art.manifest, set()
    while manifest:
        made = manifest.get("created_by") or {}
        options = made.get("options") or {}
        if made.get("stage") == "pretrain" and options.get("preset") in ARITH_PRESETS and not options.get("data"):
            return "arith"
        ref = manifest.get("base") or manifest.get("parent")
        path = Path(ref["path"]) / MANIFEST if isinstance(ref, dict) and ref.get("path") else None
        if path is None or str(path) in seen or not path.is_file():
            return "generic"
        seen.add(str(path))
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            return "generic"
    return "generic"
