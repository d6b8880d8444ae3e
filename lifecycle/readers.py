"""Readers that never raise on content: JSONL lines and CSV rows, each numbered as in the file, each either a
value or the reason it could not be read. Every JSONL and CSV path in the project reads through here.

    for line in read_lines(path):              # Line(lineno, text, error); blank lines included
        ...
    for lineno, obj, error in read_jsonl(path):  # blank lines skipped; obj is None when error is set
        ...
    for lineno, row, error in read_csv(path):    # row is a {header: cell} dict, or None with an error
        ...

JSONL rules:
- only b"\\n" ends a line (a "\\r" before it is dropped). `str.splitlines()` also splits on U+2028, U+2029,
  \\x85, \\x0b, \\x0c and \\x1c-\\x1e, which `json.dumps(ensure_ascii=False)` writes raw inside strings, so it
  broke one valid record into two invalid ones and shifted every later line number;
- a UTF-8 BOM is skipped on line 1;
- bytes that are not UTF-8, JSON that does not parse, nesting deeper than MAX_DEPTH, a line over
  MAX_LINE_BYTES and strings holding lone surrogates (valid JSON text, but no UTF-8 writer can store them)
  are each an error on their own line;
- a `.gz` file that ends early or fails its CRC yields every line before the damage, then one error line.

CSV rules: a BOM is skipped (Excel writes one), a cell may be up to MAX_CELL_CHARS (a longer one drops its
row), a row whose bytes are not UTF-8 is dropped on its own, and a damaged `.gz` ends like JSONL's.
Only the standard library is imported, so any layer (perf, the Locust file) may use this module.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

MAX_LINE_BYTES = 64 << 20   # a JSONL line longer than this is one error, skipped without holding it whole
MAX_DEPTH = 64              # nesting deeper than this is an error (records are 3-4 deep; json recursion is finite)
MAX_CELL_CHARS = 8 << 20    # a CSV cell longer than this drops its row
CSV_PARSER_LIMIT = 2**31 - 1  # what the csv module itself allows (a C long on every platform)
DAMAGE = (EOFError, zlib.error, gzip.BadGzipFile)  # what a truncated or corrupt .gz raises mid-read

TOO_DEEP = f"not readable: nested deeper than {MAX_DEPTH} levels"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class Line:
    """One line: its text without the line end, or why it could not be read (then `text` is None)."""

    lineno: int
    text: str | None
    error: str | None = None


def open_bytes(path: Path):
    """A binary file, decompressed on the fly when its name ends in .gz."""
    path = Path(path)
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def damage_message(e: BaseException) -> str:
    return f"compressed file damaged ({type(e).__name__}: {e}); the lines before it were read, the rest was not"


def read_lines(path: Path, max_bytes: int = MAX_LINE_BYTES) -> Iterator[Line]:
    """Every line of a text file split on "\\n" only, numbered from 1, blank lines included."""
    lineno = 0
    try:
        with open_bytes(path) as f:
            while True:
                raw = f.readline(max_bytes + 1)
                if lineno == 0 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]  # a BOM (Excel, Notepad) is no part of line 1; a file of just a BOM has no lines
                if not raw:
                    return
                lineno += 1
                if len(raw) > max_bytes and not raw.endswith(b"\n"):
                    while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                        pass
                    yield Line(lineno, None, f"line longer than {max_bytes} bytes")
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield Line(lineno, None, f"not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})")
                    continue
                if text.endswith("\n"):
                    text = text[:-2] if text.endswith("\r\n") else text[:-1]
                yield Line(lineno, text)
    except DAMAGE as e:
        yield Line(lineno + 1, None, damage_message(e))


def _depth(obj: Any) -> int:
    """Nesting depth of lists and dicts, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = o.values()
        elif not isinstance(o, list):
            continue
        deepest = max(deepest, d)
        stack.extend((v, d + 1) for v in o if isinstance(v, (list, dict)))
    return deepest


def parse(text: str) -> tuple[Any, str | None]:
    """(value, None) for a JSON text within the limits, else (None, what is wrong)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg}: column {e.colno})"
    except RecursionError:
        return None, TOO_DEEP
    # Cheap text tests first: most lines hold neither deep nesting nor surrogate escapes.
    deep = text.count("[") + text.count("{") > MAX_DEPTH
    if deep or ("\\u" in text and _SURROGATE_ESCAPE.search(text)):
        error = check(obj)
        if error is not None:
            return None, error
    return obj, None


def check(obj: Any) -> str | None:
    """Why a parsed value cannot be kept (nested deeper than MAX_DEPTH, a lone surrogate), or None."""
    if _depth(obj) > MAX_DEPTH:
        return TOO_DEEP
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "holds a lone surrogate escape (\\ud800-\\udfff without its pair): not valid Unicode"
    return None


def read_jsonl(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, value, None) or (line number, None, error) per non-blank line."""
    for line in read_lines(path):
        if line.error is not None:
            yield line.lineno, None, line.error
        elif line.text.strip():
            obj, error = parse(line.text)
            yield line.lineno, obj, error


def _has_undecodable(values) -> bool:
    """True when a cell holds bytes that were not UTF-8 (kept as surrogate escapes while reading)."""
    try:
        "\x00".join(values).encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def read_csv(path: Path, delimiter: str = ",", max_cell: int = MAX_CELL_CHARS, fieldnames: list[str] | None = None
             ) -> Iterator[tuple[int, dict | None, str | None]]:
    """(first line of the row, {header: cell}, None) or (line, None, error) per data row.

    The header is the first row, or `fieldnames` for a file without one; an empty file yields nothing. Rows
    with too many or too few cells, a cell over `max_cell` characters or bytes that are not UTF-8 are errors
    on their own row.
    """
    # The csv module's own limit cannot drop just one row: after its error it resumes inside the quoted cell
    # and reads the cell's remaining lines as rows. So it is lifted, and the stated limit is checked below.
    if csv.field_size_limit() < CSV_PARSER_LIMIT:
        csv.field_size_limit(CSV_PARSER_LIMIT)
    line = 0
    try:
        with io.TextIOWrapper(open_bytes(path), encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = list(fieldnames) if fieldnames else None
            while True:
                line = reader.line_num + 1
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    yield line, None, f"not a readable CSV row ({e})"
                    continue
                if header is None:
                    if not row:  # blank lines before the header
                        continue
                    header = row
                    if _has_undecodable(header):
                        yield line, None, "header is not valid UTF-8; the file was not read"
                        return
                    continue
                if not row:  # a blank line between rows
                    continue
                if _has_undecodable(row):
                    yield line, None, "row is not valid UTF-8"
                elif max(map(len, row)) > max_cell:
                    yield line, None, f"a cell is longer than {max_cell} characters (the stated limit)"
                elif len(row) != len(header):
                    more = "more" if len(row) > len(header) else "fewer"
                    yield line, None, f"row has {more} cells than the header ({len(header)})"
                else:
                    yield line, dict(zip(header, row)), None
    except DAMAGE as e:
        yield line, None, damage_message(e)
