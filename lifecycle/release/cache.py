"""The stage cache behind `lifecycle ship`: each stage's output is stored under a key that hashes its inputs.

    cache = StageCache(root)
    key = cache.key("sft", config={...}, inputs={"base": sha, "data": sha},
                    code=code_identity(("lifecycle.train.sft",), ("torch", "trl")))
    path = cache.artifact_path(key, "sft")          # run the stage into this path (written atomically)
    hit = cache.artifact(key, "sft")                # a verified Artifact, or None

A key is the sha256 of the stage name, its config, its inputs' sha256 and the code that matters (the source
of every project module the stage can import, found through the import graph, plus the versions of the
libraries it uses). Entries are written atomically
(temp dir or temp file, then rename), so a killed run leaves only temp names, which the next run removes.
One ship at a time holds the cache's lock. A hit touches its entry, so `lifecycle releases cache --prune`
can drop what no ship has used for a while; releases hard-link their files, so pruning never breaks one.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import time
from functools import lru_cache
from pathlib import Path

from lifecycle.errors import UserError

@lru_cache(maxsize=None)
def lib_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@lru_cache(maxsize=None)
def code_identity(modules: tuple[str, ...], libs: tuple[str, ...] = (), skip_registries: tuple[str, ...] = ()) -> dict:
    """What a stage's result depends on besides config and inputs: the source of every project module its
    modules can import (followed through the import graph, `codegraph.closure`) and its libraries' versions."""
    from lifecycle.release.codegraph import ROOT, closure, source_hash

    files = closure(modules, skip_registries)
    return {"source": source_hash(files), "modules": len(files),
            "files": [str(f.relative_to(ROOT)) for f in files],
            "libraries": {n: lib_version(n) for n in sorted(set(libs))}}


def cache_root(cache_dir: str = "") -> Path:
    """Where ship's stage cache lives: the config's cache_dir, or $LIFECYCLE_HOME/cache/ship."""
    from lifecycle.models import home

    return Path(cache_dir).expanduser() if cache_dir else home() / "cache" / "ship"


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class StageCache:
    """Content-keyed stage outputs under `root`, guarded by an exclusive lock while a ship runs."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self._lock = None

    def __enter__(self) -> "StageCache":
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise UserError(f"another `lifecycle ship` is using the stage cache {self.root}; wait for it, or "
                            "give this one its own --set cache_dir=DIR") from None
        self._clean_stale()
        return self

    def __exit__(self, *exc) -> None:
        if self._lock:
            self._lock.close()  # closing releases the lock; SIGKILL releases it too
            self._lock = None

    def _clean_stale(self) -> None:
        """Temp names left by a killed run (we hold the lock, so nobody else is writing)."""
        for entry in self.root.glob("*/.*"):
            if ".tmp" in entry.name or ".old-" in entry.name:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    @staticmethod
    def key(stage: str, *, config: dict, inputs: dict, code: dict) -> str:
        return digest({"stage": stage, "config": config, "inputs": inputs, "code": code})

    def entry(self, key: str) -> Path:
        return self.root / key[:24]

    def _touch(self, key: str) -> None:
        """Mark an entry as used now (its mtime is what pruning goes by)."""
        try:
            os.utime(self.entry(key))
        except OSError:
            pass

    def artifact_path(self, key: str, name: str) -> Path:
        return self.entry(key) / name

    def artifact(self, key: str, name: str):
        """The cached artifact, verified (sha256 of every file); a damaged entry is dropped and rebuilt."""
        from lifecycle.artifact import Artifact

        path = self.artifact_path(key, name)
        if not (path / "manifest.json").is_file():
            return None
        try:
            art = Artifact.load(path)
        except UserError:
            shutil.rmtree(path, ignore_errors=True)
            return None
        self._touch(key)
        return art

    def json_path(self, key: str, name: str) -> Path:
        return self.entry(key) / f"{name}.json"

    def load_json(self, key: str, name: str) -> dict | None:
        path = self.json_path(key, name)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except ValueError:
            path.unlink(missing_ok=True)
            return None
        self._touch(key)
        return data

    def store_json(self, key: str, name: str, data: dict) -> Path:
        from lifecycle.atomic import write_json_atomic

        path = self.json_path(key, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, data)
        return path

    # -- housekeeping (`lifecycle releases cache`) ---------------------------------------------------------

    def entries(self) -> list[dict]:
        """One row per entry: key prefix, what it holds, last use, bytes, and bytes only the cache holds."""
        rows = []
        now = time.time()
        for e in sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []:
            files = [f for f in e.rglob("*") if f.is_file()]
            stats = [f.stat() for f in files]
            rows.append({
                "key": e.name, "holds": sorted(c.name.removesuffix(".json") for c in e.iterdir()
                                               if not c.name.startswith(".")),
                "age_days": round((now - e.stat().st_mtime) / 86400, 2),
                "bytes": sum(st.st_size for st in stats),
                # a file a release also links (nlink > 1) stays on disk when the entry goes
                "bytes_freed": sum(st.st_size for st in stats if st.st_nlink == 1),
            })
        return rows

    def prune(self, older_than_days: float) -> list[dict]:
        """Remove entries no ship has used for `older_than_days` (0: all). Call inside `with cache:`."""
        gone = [r for r in self.entries() if r["age_days"] >= older_than_days]
        for r in gone:
            shutil.rmtree(self.root / r["key"], ignore_errors=True)
        return gone


def link_tree(src: Path, dest: Path) -> None:
    """Hard-link every file of `src` into `dest` (copy where links cannot cross filesystems)."""
    for f in sorted(src.rglob("*")):
        target = dest / f.relative_to(src)
        if f.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)
