"""Collect raw objects from files, folders, Hugging Face datasets saved to disk, dataset artifacts and URLs.

    lifecycle data collect --input data/ --input https://example.org/page --output raw.jsonl

Every object read becomes an `Item` that says where it came from (`file:line`); an object that could not be
parsed is an `Item` with an `error` and a `reason`, so it is counted and reported, never skipped silently.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lifecycle.atomic import atomic_file
from lifecycle.data.items import Item  # noqa: F401  (readers and callers import it from here too)
from lifecycle.errors import UserError
from lifecycle.extras import install_hint
from lifecycle.readers import (
    DAMAGE,
    TOO_DEEP,
    check,
    damage_message,
    open_bytes,
    parse,
    read_csv,
    read_jsonl,
    read_lines,
)

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "csv",
              ".parquet": "parquet", ".txt": "text", ".md": "text", ".html": "html", ".htm": "html",
              ".urls": "urls"}
JSON_LIST_KEYS = ("data", "records", "rows", "examples", "train")
TEXT_KINDS = ("text", "html", "urls")  # sources whose records are plain text, whatever they hold


@dataclass
class Source:
    """One input: a file, an HF dataset folder, a dataset artifact or a URL list; `sha256` fills in on read."""

    label: str
    kind: str
    path: Path | None = None
    urls: list[str] = field(default_factory=list)
    sha256: str | None = None
    records: int = 0

    def manifest(self) -> dict:
        out = {"input": self.label, "kind": self.kind, "sha256": self.sha256, "records": self.records}
        if self.urls and self.path is None:
            out["urls"] = self.urls
        return out


def _kind_of(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return EXTENSIONS.get(Path(name).suffix)


def _is_hf_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file())


def _is_dataset_artifact(path: Path) -> bool:
    m = path / "manifest.json"
    if not m.is_file():
        return False
    try:
        return json.loads(m.read_text()).get("format") == "dataset"
    except (OSError, json.JSONDecodeError):
        return False


def sources(inputs: list[str], skipped: list[str] | None = None) -> list[Source]:
    """Expand inputs (files, folders, URLs) into sources; files of unknown type inside folders go to `skipped`."""
    if not inputs:
        raise UserError("no input given; pass --input PATH (a file, a folder or a URL), repeatable")
    out: list[Source] = []
    urls = [s for s in inputs if s.startswith(("http://", "https://"))]
    for spec in inputs:
        if spec in urls:
            continue
        path = Path(spec).expanduser()
        if not path.exists():
            raise UserError(f"input {spec} not found (give a file, a folder or an http(s) URL)")
        if path.is_dir():
            _walk(path, out, skipped if skipped is not None else [])
        else:
            kind = _kind_of(path)
            if kind is None:
                raise UserError(f"input {spec}: unknown file type; use one of {', '.join(sorted(EXTENSIONS))}")
            out.append(Source(str(path), kind, path))
    if urls:
        out.append(Source(f"{len(urls)} url(s)", "urls", urls=urls))
    return out


def _walk(root: Path, out: list[Source], skipped: list[str]) -> None:
    if _is_hf_dataset(root):
        out.append(Source(str(root), "hf", root))
        return
    if _is_dataset_artifact(root):
        for split in ("train", "validation", "test"):
            if (root / f"{split}.jsonl").is_file():
                out.append(Source(str(root / f"{split}.jsonl"), "jsonl", root / f"{split}.jsonl"))
        return
    for child in sorted(root.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            _walk(child, out, skipped)
        elif _kind_of(child):
            out.append(Source(str(child), _kind_of(child), child))
        else:
            skipped.append(str(child))


def _open_text(path: Path) -> io.TextIOBase:
    """Strict UTF-8 (a decode error is reported, not replaced); BOM skipped; line ends kept."""
    return io.TextIOWrapper(open_bytes(path), encoding="utf-8-sig", newline="")


def _hash_path(path: Path) -> str:
    from lifecycle.artifact import sha256_file

    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(path).as_posix().encode() + b"\0" + sha256_file(p).encode())
    return h.hexdigest()


def read(src: Source, text_unit: str = "paragraph", crawl_options: Any = None) -> Iterator[Item]:
    """Yield the items of one source, filling in `src.sha256` and `src.records`."""
    if src.path is not None:
        src.sha256 = _hash_path(src.path)
    try:
        if src.kind == "urls" and src.path is not None:
            src.urls = _url_lines(src.path)
        reader = _urls(src, crawl_options) if src.kind == "urls" else READERS[src.kind](src.path, text_unit)
        for item in reader:
            src.records += 1
            yield item
    except UnicodeDecodeError as e:
        src.records += 1
        yield Item(src.label, error=f"not valid UTF-8 (byte {e.object[e.start]:#04x}); the rest of the file "
                                    "was not read")
    except DAMAGE as e:  # a whole-file reader (json, html) on a truncated or corrupt .gz
        src.records += 1
        yield Item(src.label, error=damage_message(e))


def head(src: Source, n: int, text_unit: str = "paragraph") -> list[Any]:
    """The objects among the first `n` items of a file source (for format detection); nothing is counted."""
    out = []
    try:
        for i, item in enumerate(READERS[src.kind](src.path, text_unit)):
            if i >= n:
                break
            if item.error is None:
                out.append(item.obj)
    except (UnicodeDecodeError, *DAMAGE):
        pass
    return out


def _url_lines(path: Path) -> list[str]:
    return [ln.text.strip() for ln in read_lines(path)
            if ln.text is not None and ln.text.strip() and not ln.text.lstrip().startswith("#")]


def _urls(src: Source, crawl_options: Any) -> Iterator[Item]:
    from lifecycle.data.crawl import CrawlOptions, crawl

    h = hashlib.sha256()
    for item, body in crawl(src.urls, crawl_options or CrawlOptions()):
        h.update(item.where.encode() + b"\0" + hashlib.sha256(body).hexdigest().encode())
        yield item
    if src.path is None:
        src.sha256 = h.hexdigest()


def _jsonl(path: Path, _unit: str) -> Iterator[Item]:
    for lineno, obj, error in read_jsonl(path):
        yield Item(f"{path}:{lineno}", obj, error)


def _json(path: Path, _unit: str) -> Iterator[Item]:
    with _open_text(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        yield Item(f"{path}:{e.lineno}", error=f"not valid JSON ({e.msg} at column {e.colno}); file not read")
        return
    except RecursionError:
        yield Item(f"{path}:1", error=f"{TOO_DEEP}; file not read")
        return
    if isinstance(data, dict):
        key = next((k for k in JSON_LIST_KEYS if isinstance(data.get(k), list)), None)
        data = data[key] if key else [data]
    if not isinstance(data, list):
        yield Item(f"{path}:1", error=f"expected a list of objects, got {type(data).__name__}")
        return
    for i, obj in enumerate(data):
        yield Item(f"{path}[{i}]", error=error) if (error := check(obj)) else Item(f"{path}[{i}]", obj)


def _csv(path: Path, _unit: str) -> Iterator[Item]:
    delimiter = "\t" if ".tsv" in path.name.lower() else ","
    for line, row, error in read_csv(path, delimiter):
        yield Item(f"{path}:{line}", None if row is None else {k: _cell(v) for k, v in row.items()}, error)


def _cell(value: str) -> Any:
    """A CSV cell holding a JSON list of objects (messages, conversations) is decoded; others stay text."""
    s = value.strip()
    if s.startswith("[{"):
        decoded, error = parse(s)
        if error is None and isinstance(decoded, list) and all(isinstance(x, dict) for x in decoded):
            return decoded
    return value


def _parquet(path: Path, _unit: str) -> Iterator[Item]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        yield Item(f"{path}:0", error=f"not a readable Parquet file ({e})")
        return
    row = 0
    batches = pf.iter_batches(batch_size=4096)
    while True:
        try:
            batch = next(batches, None)
        except Exception as e:  # pyarrow raises several types for a damaged row group
            yield Item(f"{path}:row {row}", error=f"damaged from here ({type(e).__name__}: {e}); rows before kept")
            return
        if batch is None:
            return
        for obj in batch.to_pylist():
            yield Item(f"{path}:row {row}", obj)
            row += 1


def _text(path: Path, unit: str) -> Iterator[Item]:
    if unit not in ("line", "paragraph", "document"):
        raise UserError(f"text_unit must be line, paragraph or document, got {unit!r}")
    # Lines split on "\n" only (U+2028 and friends stay inside their line); an unreadable line is its own
    # error item and ends the paragraph around it, so one bad byte costs one line, not the file.
    if unit == "document":
        lines, errors = [], []
        for ln in read_lines(path):
            (lines.append(ln.text) if ln.error is None else errors.append(ln))
        if errors:
            yield Item(f"{path}:{errors[0].lineno}", error=f"{errors[0].error}; document not read")
        elif any(ln.strip() for ln in lines):
            yield Item(f"{path}:1", "\n".join(lines))
        return
    if unit == "line":
        for ln in read_lines(path):
            if ln.error is not None:
                yield Item(f"{path}:{ln.lineno}", error=ln.error)
            elif ln.text.strip():
                yield Item(f"{path}:{ln.lineno}", ln.text)
        return
    block: list[str] = []
    start = 1
    for ln in read_lines(path):
        if ln.error is None and ln.text.strip():
            if not block:
                start = ln.lineno
            block.append(ln.text)
            continue
        if block:
            yield Item(f"{path}:{start}", "\n".join(block))
            block = []
        if ln.error is not None:
            yield Item(f"{path}:{ln.lineno}", error=ln.error)
    if block:
        yield Item(f"{path}:{start}", "\n".join(block))


def _html(path: Path, _unit: str) -> Iterator[Item]:
    from lifecycle.data.clean import html_to_text

    with _open_text(path) as f:
        text = html_to_text(f.read(), document=True)
    if text.strip():
        yield Item(f"{path}:1", text)
    else:
        yield Item(f"{path}:1", error="no main text found in the HTML", reason="empty")


def _hf(path: Path, _unit: str) -> Iterator[Item]:
    try:
        from datasets import DatasetDict, load_from_disk
    except ImportError:
        raise UserError(f"reading a saved dataset needs datasets: {install_hint('datasets')}") from None
    ds = load_from_disk(str(path))
    splits = ds.items() if isinstance(ds, DatasetDict) else [("", ds)]
    for split, d in splits:
        tag = f"[{split}]" if split else ""
        for i, obj in enumerate(d):
            yield Item(f"{path}{tag}#{i}", obj)


READERS = {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet, "text": _text, "html": _html,
           "hf": _hf}


def write_jsonl_atomic(path: Path, rows) -> int:
    """Write dicts as JSONL through a temp file and a rename; returns the count."""
    n = 0
    with atomic_file(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n
