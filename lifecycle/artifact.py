"""Artifacts: a directory plus `manifest.json`, written atomically and verified on load.

    with write_artifact("out/sft", format="adapter", parent=base, stage="sft", options=cfg) as tmp:
        model.save_pretrained(tmp)          # write files into tmp
    art = Artifact.load("out/sft")          # refuses a missing file or a sha256 mismatch

The manifest holds `format`, `parent` (path and sha256 of the manifest it was made from), `created_by`
(stage, options, code version), `files` (relative path -> sha256) and `metrics`.

Hashing a multi-GB checkpoint on every load costs seconds to minutes, so a file's sha256 is remembered with
its (size, mtime, inode, device) under `$LIFECYCLE_HOME/hashes/`, one JSON per folder: a file whose stat
is unchanged is not read again. The trade-off: an edit that keeps size and mtime (e.g. `touch -r` after
a rewrite) goes unseen until a full check. `Artifact.load(path, verify="full")`, `lifecycle show --verify`
or LIFECYCLE_VERIFY=full re-hash every byte.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lifecycle.atomic import atomic_dir, write_json_atomic
from lifecycle.errors import UserError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class HashMemo:
    """Remembered sha256 of the files under one folder, keyed by each file's stat (see the module docstring)."""

    def __init__(self, root: Path, full: bool = False):
        self.root = Path(root).resolve()
        self.full = full or os.environ.get("LIFECYCLE_VERIFY", "").lower() == "full"
        home = Path(os.environ.get("LIFECYCLE_HOME", "~/.lifecycle")).expanduser()
        self.path = home / "hashes" / (hashlib.sha256(str(self.root).encode()).hexdigest()[:32] + ".json")
        self.entries: dict[str, list] = {}
        self.changed = False
        if not self.full and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if data.get("root") == str(self.root):
                    self.entries = data.get("files", {})
            except (OSError, ValueError):
                self.entries = {}

    # A hash is trusted only if the file was already this old when it was hashed: file timestamps are coarse
    # (a few ms), so an edit right after hashing could otherwise keep the recorded mtime ("racy git").
    SETTLED_NS = 2_000_000_000

    def sha256(self, rel: str) -> str:
        import time

        p = self.root / rel
        st = p.stat()
        key = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]
        known = self.entries.get(rel)
        if not self.full and known and len(known) == 6 and known[:4] == key and known[1] + self.SETTLED_NS < known[5]:
            return known[4]
        hashed_at = time.time_ns()
        digest = sha256_file(p)
        self.entries[rel] = key + [digest, hashed_at]
        self.changed = True
        return digest

    def save(self) -> None:
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, {"root": str(self.root), "files": self.entries})
        except OSError:  # a read-only home only costs re-hashing next time
            pass


def _hash_tree(root: Path, memo: HashMemo | None = None) -> dict[str, str]:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(root).as_posix()
            files[rel] = memo.sha256(rel) if memo else sha256_file(p)
    if memo:
        memo.save()
    return files


def _command_line() -> str:
    import shlex
    import sys

    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "lifecycle":
        argv[0] = "lifecycle"
    return shlex.join(argv)


def code_version() -> str:
    from lifecycle import __version__

    return __version__


@dataclass
class Artifact:
    """A verified artifact directory. Construct with `Artifact.load`."""

    path: Path
    manifest: dict[str, Any]

    @property
    def format(self) -> str:
        return self.manifest["format"]

    @property
    def name(self) -> str:
        return self.manifest.get("name") or self.path.name

    @property
    def parent(self) -> dict | None:
        return self.manifest.get("parent")

    @property
    def created_by(self) -> dict:
        return self.manifest.get("created_by", {})

    @property
    def files(self) -> dict[str, str]:
        return self.manifest.get("files", {})

    @property
    def metrics(self) -> dict:
        return self.manifest.get("metrics", {})

    @property
    def manifest_sha256(self) -> str:
        if (self.path / MANIFEST).is_file():
            return sha256_file(self.path / MANIFEST)
        # An external checkpoint has no manifest file: hash its canonical in-memory manifest instead.
        return hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()

    @property
    def external(self) -> bool:
        return self.created_by.get("stage") == "external"

    def size_bytes(self) -> int:
        return sum((self.path / rel).stat().st_size for rel in self.files)

    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool | str = True) -> "Artifact":
        """Read the manifest; with `verify`, check every listed file's sha256 (one clear error if not).
        `verify="full"` re-hashes every byte instead of trusting remembered hashes of unchanged files."""
        root = Path(path).expanduser()
        mpath = root / MANIFEST
        if not mpath.is_file():
            if (root / "config.json").is_file():
                return cls.from_checkpoint(root, full=verify == "full")
            raise UserError(f"{root} is not an artifact: no {MANIFEST} (make one with a lifecycle stage)")
        try:
            manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{mpath} is not valid JSON ({e.msg} at line {e.lineno})") from None
        for key in ("format", "files"):
            if key not in manifest:
                raise UserError(f"{mpath} has no '{key}' field; the artifact is incomplete")
        art = cls(root.resolve(), manifest)
        if verify:
            art.verify(full=verify == "full")
        return art

    @classmethod
    def from_checkpoint(cls, root: Path, full: bool = False) -> "Artifact":
        """A plain Hugging Face checkpoint folder (config.json, weights, tokenizer) seen as an `hf` artifact.

        Its manifest lives in memory only (nothing is written into the user's folder); file hashes are
        taken now, so adapters trained on it can later check that the checkpoint did not change.
        """
        manifest = {"schema": SCHEMA_VERSION, "name": root.name, "format": "hf", "parent": None,
                    "created_by": {"stage": "external", "options": {}}, "files": _hash_tree(root, HashMemo(root, full)),
                    "metrics": {}}
        return cls(root.resolve(), manifest)

    def verify(self, full: bool = False) -> None:
        """Refuse the artifact if any listed file is missing or its sha256 differs (`full`: re-hash all)."""
        memo = HashMemo(self.path, full)
        for rel, digest in self.files.items():
            p = self.path / rel
            if not p.is_file():
                raise UserError(f"artifact {self.path}: file '{rel}' listed in the manifest is missing")
            actual = memo.sha256(rel)
            if actual != digest:
                memo.entries.pop(rel, None)
                memo.save()
                raise UserError(
                    f"artifact {self.path}: sha256 mismatch for '{rel}' "
                    f"(manifest {digest[:12]}…, file {actual[:12]}…); the file was changed or corrupted"
                )
        memo.save()

    def update_metrics(self, metrics: dict) -> None:
        """Merge metrics into the manifest in place (atomic rename of the manifest file)."""
        if self.external:
            raise UserError(f"{self.path} is an external checkpoint; its metrics cannot be recorded in place")
        self.manifest.setdefault("metrics", {}).update(metrics)
        write_json_atomic(self.path / MANIFEST, self.manifest)


def parent_ref(parent: Artifact | None) -> dict | None:
    if parent is None:
        return None
    return {"path": str(parent.path), "sha256": parent.manifest_sha256, "format": parent.format}


@contextlib.contextmanager
def write_artifact(
    dest: str | os.PathLike,
    *,
    format: str,
    stage: str,
    parent: Artifact | None = None,
    options: dict | None = None,
    metrics: dict | None = None,
    extra: dict | None = None,
    overwrite: bool = False,
) -> Iterator[Path]:
    """Yield a temp dir beside `dest`; on success hash its files, write the manifest, rename into place.

    On an exception the temp dir is removed and `dest` is untouched. Metrics may be added to the yielded
    dict-holder after the files are written: pass a dict as `metrics` and mutate it inside the block.
    """
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and not overwrite:
        raise UserError(f"{dest} already exists; choose another --output or pass --overwrite")
    with atomic_dir(dest) as tmp:
        yield tmp
        manifest = {
            "schema": SCHEMA_VERSION,
            "name": dest.name,
            "format": format,
            "parent": parent_ref(parent),
            "created_by": {
                "stage": stage,
                "options": options or {},
                "code_version": code_version(),
                "command": _command_line(),
                "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
            "files": _hash_tree(tmp),
            "metrics": metrics or {},
        }
        if extra:
            manifest.update(extra)
        write_json_atomic(tmp / MANIFEST, manifest)
