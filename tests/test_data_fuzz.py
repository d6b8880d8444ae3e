"""Property-based fuzz of every data reader and format detector (hypothesis): records with random unicode
(line and paragraph separators, NUL, RTL marks, lone surrogates escaped or raw), random field types and
nesting, random damage (garbage bytes, cut lines, deep nesting, a truncated .gz), and the properties:
no exception escapes, every line read is kept or dropped with a reason, and no valid record is lost.

    python -m pytest tests/test_data_fuzz.py -q
    LIFECYCLE_FUZZ_EXAMPLES=2000 python -m pytest tests/test_data_fuzz.py -q   # a longer run (README numbers)

Examples are derandomized, so CI sees the same cases every run. `lifecycle batch` gets the same fuzz in
tests/test_serve_batch.py.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifecycle.data import formats
from lifecycle.data.collect import Source, read
from lifecycle.data.pii import find_pii
from lifecycle.readers import MAX_DEPTH, read_csv, read_jsonl

pytestmark = pytest.mark.unit

EXAMPLES = int(os.environ.get("LIFECYCLE_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# Characters that broke or could break line handling, cleaning and JSON: separators splitlines() splits on,
# NUL and controls, bidi marks, a BOM, and lone surrogates (written escaped by json.dumps).
SPECIAL = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x00", "\r", "\n", "\t",
           "\u200f", "\u202e", "\u200b", "\ufeff", "\ud800", "\udfff", "\"", "\\", "{", "[", ","]
TEXT = st.text(st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(SPECIAL)), max_size=40)
KEYS = st.one_of(st.sampled_from(["text", "instruction", "input", "output", "conversations", "from", "value",
                                  "messages", "role", "content", "prompt", "chosen", "rejected", "system", "id"]),
                 TEXT)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | TEXT, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(KEYS, kids, max_size=4),
                    max_leaves=12)
ROLE = st.one_of(st.sampled_from(["user", "assistant", "system", "human", "gpt", "tool"]), JSON)
TURN = st.fixed_dictionaries({"role": ROLE, "content": st.one_of(TEXT, JSON)})
SHAREGPT_TURN = st.fixed_dictionaries({"from": ROLE, "value": st.one_of(TEXT, JSON)})
RECORD = st.one_of(
    st.fixed_dictionaries({"text": st.one_of(TEXT, JSON)}),
    st.fixed_dictionaries({"instruction": st.one_of(TEXT, JSON), "output": st.one_of(TEXT, JSON)},
                          optional={"input": st.one_of(TEXT, JSON), "system": st.one_of(TEXT, JSON)}),
    st.fixed_dictionaries({"conversations": st.one_of(st.lists(SHAREGPT_TURN, max_size=4), JSON)}),
    st.fixed_dictionaries({"messages": st.one_of(st.lists(TURN, max_size=4), JSON)}),
    st.fixed_dictionaries({"chosen": st.one_of(TEXT, st.lists(TURN, max_size=3), JSON),
                           "rejected": st.one_of(TEXT, st.lists(TURN, max_size=3), JSON)},
                          optional={"prompt": st.one_of(TEXT, st.lists(TURN, max_size=3), JSON)}),
    JSON,
)


def _has_surrogate(obj) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in json.dumps(obj, ensure_ascii=False))


def _depth(obj) -> int:
    if isinstance(obj, dict):
        obj = list(obj.values())
    return 1 + max(map(_depth, obj), default=0) if isinstance(obj, list) else 0


@st.composite
def jsonl_lines(draw):
    """[(bytes of the line, the record when the line is valid JSON the reader must keep, else None)]."""
    out = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["record", "record", "record", "garbage", "cut", "deep", "blank"]))
        if kind == "record":
            rec = draw(RECORD)
            raw = json.dumps(rec, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
            ok = not _has_surrogate(rec) and _depth(rec) <= MAX_DEPTH
            out.append((raw, rec if ok else None))
        elif kind == "garbage":
            out.append((draw(st.binary(max_size=30)).replace(b"\n", b" ") or b"\xff", None))
        elif kind == "cut":
            raw = json.dumps(draw(RECORD), ensure_ascii=False).encode("utf-8", "surrogatepass")
            out.append((raw[: draw(st.integers(0, max(0, len(raw) - 1)))] or b"{", None))
        elif kind == "deep":  # MAX_DEPTH levels are kept; deeper is dropped, however deep
            n = draw(st.sampled_from([MAX_DEPTH, MAX_DEPTH + 1, 500, 5000]))
            raw = b"[" * n + b"]" * n
            out.append((raw, json.loads(raw) if n <= MAX_DEPTH else None))
        else:
            out.append((draw(st.sampled_from([b"", b"   ", b"\t", "\u2028".encode()])), None))
    return out


def _blank(raw: bytes) -> bool:
    """A line the readers skip: it decodes and holds only whitespace (str.strip's idea of it)."""
    try:
        return not raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False


def _write(path: Path, lines, crlf: bool, bom: bool, trailing: bool) -> bytes:
    data = (b"\r\n" if crlf else b"\n").join(raw for raw, _ in lines)
    if lines and trailing:
        data += b"\r\n" if crlf else b"\n"
    data = (b"\xef\xbb\xbf" if bom else b"") + data
    path.write_bytes(data)
    return data


@FUZZ
@given(lines=jsonl_lines(), crlf=st.booleans(), bom=st.booleans(), trailing=st.booleans())
def test_jsonl_reader_keeps_every_valid_line(tmp_path_factory, lines, crlf, bom, trailing):
    path = tmp_path_factory.mktemp("j") / "in.jsonl"
    _write(path, lines, crlf, bom, trailing)
    got = list(read_jsonl(path))
    if not trailing and lines and _blank(lines[-1][0]):
        lines = lines[:-1]  # nothing after the last "\n": no line there
    nonblank = [(i, raw, rec) for i, (raw, rec) in enumerate(lines, 1) if not _blank(raw)]
    assert [g[0] for g in got] == [i for i, _, _ in nonblank]  # one result per non-blank line, numbered as in the file
    for (lineno, obj, error), (_, raw, rec) in zip(got, nonblank):
        assert error is None or obj is None  # (a line may hold JSON null)
        if rec is not None:  # a valid record: never lost, never changed
            assert error is None and obj == rec, (raw, error)


@FUZZ
@given(lines=jsonl_lines(), cut=st.floats(0, 1))
def test_truncated_gzip_keeps_the_lines_before_the_damage(tmp_path_factory, lines, cut):
    folder = tmp_path_factory.mktemp("g")
    plain = folder / "in.jsonl"
    data = _write(plain, lines, False, False, True)
    full = list(read_jsonl(plain))
    z = gzip.compress(data)
    gz = folder / "in.jsonl.gz"
    gz.write_bytes(z[: int(len(z) * cut)])
    got = list(read_jsonl(gz))
    damaged = bool(got) and got[-1][2] is not None and got[-1][2].startswith("compressed file damaged")
    body = got[:-1] if damaged else got
    assert body == full[: len(body)]  # everything before the damage is exactly what the whole file gives
    if 0 < int(len(z) * cut) < len(z):
        assert damaged


@FUZZ
@given(obj=st.one_of(RECORD, JSON), fmt=st.sampled_from(formats.FORMATS))
def test_format_detectors_and_normalisers_only_raise_format_errors(obj, fmt):
    assert formats.detect_one(obj) in (None, *formats.FORMATS)
    assert formats.detect([obj, obj]) in (None, *formats.FORMATS)
    try:
        rec = formats.normalise(obj, fmt)
    except formats.FormatError:
        return
    assert all(isinstance(t, str) for t in formats.texts(rec))
    assert isinstance(formats.joined(formats.map_texts(rec, str.upper)), str)


CELL = st.text(st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(SPECIAL[:16])), max_size=30)


@FUZZ
@given(rows=st.lists(st.tuples(CELL, CELL), max_size=10), bom=st.booleans(),
       damage=st.sampled_from([None, "bad_byte", "extra_cell", "truncate"]), where=st.floats(0, 1))
def test_csv_reader_counts_every_row(tmp_path_factory, rows, bom, damage, where):
    path = tmp_path_factory.mktemp("c") / "in.csv"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # as Excel writes it (a bare "\r" in a cell is quoted)
    w.writerow(["id", "text"])
    w.writerows(rows)
    data = (b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8")
    if damage == "bad_byte":
        at = int(len(data) * where)
        data = data[:at] + b"\xff" + data[at:]
    elif damage == "extra_cell":
        data += b"x,y,z\n"
    elif damage == "truncate":
        data = data[: int(len(data) * where)]
    path.write_bytes(data)
    got = list(read_csv(path))
    for line, row, error in got:
        assert (row is None) == (error is not None) and line >= 1
    if damage is None:
        assert [(r["id"], r["text"]) for _, r, _ in got] == [tuple(r) for r in rows]  # BOM never eats "id"
    elif damage == "extra_cell":
        assert got[-1][2] == "row has more cells than the header (2)"
        assert [(r["id"], r["text"]) for _, r, _ in got[:-1]] == [tuple(r) for r in rows]


@FUZZ
@given(text=st.text(st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from(SPECIAL[:16])),
                    max_size=200), bad=st.booleans(), unit=st.sampled_from(["line", "paragraph", "document"]))
def test_text_reader_never_raises(tmp_path_factory, text, bad, unit):
    path = tmp_path_factory.mktemp("t") / "in.txt"
    data = text.encode("utf-8")
    path.write_bytes(data[: len(data) // 2] + b"\xc3" + data[len(data) // 2:] if bad else data)
    items = list(read(Source(str(path), "text", path), unit))
    for it in items:
        assert (it.obj is None) == (it.error is not None)
        assert isinstance(it.obj, (str, type(None)))


@FUZZ
@given(lines=jsonl_lines(), fmt=st.sampled_from(["auto", *formats.FORMATS]), pii=st.booleans())
def test_prepare_counts_every_line(tmp_path_factory, lines, fmt, pii):
    """read == kept + dropped by reason, one read per non-blank line, and nothing escapes."""
    from lifecycle.data.prepare import PrepareConfig, process
    from lifecycle.data.report import Report
    from lifecycle.errors import UserError

    path = tmp_path_factory.mktemp("p") / "in.jsonl"
    _write(path, lines, False, False, True)
    cfg = PrepareConfig(inputs=[str(path)], format=fmt, redact_pii=pii, dedup_near=False, gopher=False)
    report = Report()
    sink = io.StringIO()
    try:
        process(cfg, report, sink)
    except UserError as e:  # the one refusal allowed: inputs that mix record kinds (decided before reading)
        assert "mix record kinds" in str(e)
        return
    assert report.read == sum(not _blank(raw) for raw, _ in lines)
    assert report.read == report.kept + report.dropped_total
    kept = [json.loads(x) for x in sink.getvalue().splitlines()]
    assert len(kept) == report.kept
    out = sink.getvalue().encode("utf-8")  # every kept record is writable UTF-8
    assert out.count(b"\n") == report.kept


@FUZZ
@given(rows=st.lists(st.one_of(st.fixed_dictionaries(
    {"id": st.one_of(TEXT, JSON), "prompt": st.one_of(TEXT, JSON), "response_a": st.one_of(TEXT, JSON),
     "response_b": st.one_of(TEXT, JSON), "context": st.one_of(TEXT, JSON),
     "preference": st.one_of(st.sampled_from(["a", "b", "tie", "A"]), JSON)}), JSON), max_size=8))
def test_label_import_reports_every_row(tmp_path_factory, rows):
    from lifecycle.data import label

    path = tmp_path_factory.mktemp("l") / "sheet.jsonl"
    path.write_bytes(b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"
                              for r in rows))
    result = label.import_sheet(path, label.get_schema("preference"))
    assert result.rows == len(rows)
    assert len(result.records) + len(result.errors) + result.ties + result.unlabelled == result.rows


@FUZZ
@given(text=st.text(st.one_of(st.characters(exclude_categories=("Cs",)), st.sampled_from("0123456789 -+().@:")),
                    max_size=120))
def test_pii_spans_never_overlap(text):
    spans = find_pii(text)
    assert all(a < b for a, b, _ in spans)
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))
