"""Atomic writes: a reader sees the old file or the new one, never half of one.

    write_text_atomic("out/eval.json", text)           # str (UTF-8) or bytes
    write_json_atomic(Path("manifest.json"), data)     # indent 2, default=str, trailing newline
    with atomic_file("out/rows.jsonl") as f:           # streamed; on an exception `path` is untouched
        f.write(line)
    with atomic_dir(dest) as tmp:                      # a whole folder: build in tmp, swapped in at the end
        (tmp / "a.txt").write_text("...")

The temp file is `.NAME.XXXXXXXX.tmp` beside the target: on the same filesystem, so `os.replace` is
atomic, and a dot name with `.tmp` in it, which the release cache's sweep removes if a kill leaves one.
It is deleted on any exception. Nothing is fsynced: this protects against a killed process, not against
power loss, and costs no disk flush per file. `mode` sets the result's permissions (mkstemp alone
leaves owner-only 0600); the parent folder is created when missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

READABLE = 0o644  # like a plain open() under the usual umask: artifacts, releases, data files
OWNER_ONLY = 0o600  # what mkstemp leaves; eval, bench and load-test outputs have always been written so


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, binary: bool = False, mode: int = READABLE) -> Iterator[IO]:
    """Yield an open temp file beside `path`; when the block ends cleanly it replaces `path`."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, data: str | bytes, *, mode: int = READABLE) -> Path:
    """Write `data` (bytes as given, str as UTF-8) to `path` atomically; returns the path."""
    binary = isinstance(data, bytes)
    with atomic_file(path, binary=binary, mode=mode) as f:
        f.write(data)
    return Path(path).expanduser()


def write_json_atomic(path: str | os.PathLike, data: Any, *, mode: int = READABLE) -> Path:
    """JSON with indent 2 (non-JSON values via str) and a trailing newline, written atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n", mode=mode)


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a new private temp dir beside `dest` (`.NAME.tmp-XXXX`); when the block ends cleanly it replaces
    `dest` (see replace_dir), on an exception it is removed and `dest` is untouched."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    try:
        yield tmp
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(tmp: Path, dest: Path) -> None:
    """Rename a finished temp dir into place; an existing `dest` is set aside first, then removed."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result should read like any other folder
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
