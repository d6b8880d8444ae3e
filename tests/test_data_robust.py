"""The files real tools produce, each case from issue 19: one bad record costs one line, never the run, and no
valid record is lost (the fuzz in tests/test_data_fuzz.py generalises these)."""

import csv
import gzip
import json

import pytest

from lifecycle.data import label
from lifecycle.data.prepare import PrepareConfig, process
from lifecycle.data.report import Report
from lifecycle.readers import MAX_CELL_CHARS, read_csv, read_jsonl

pytestmark = pytest.mark.unit


def _process(path, **kw):
    kw.setdefault("dedup_near", False)
    report, sink = Report(), __import__("io").StringIO()
    process(PrepareConfig(inputs=[str(path)], **kw), report, sink)
    report.check()
    return report, [json.loads(x) for x in sink.getvalue().splitlines()]


def test_excel_csv_with_a_bom_imports(tmp_path):
    sheet = tmp_path / "prefs.csv"
    rows = [["id", "prompt", "response_a", "response_b", "context", "preference"],
            ["p1", "Say hi", "Hi!", "Go away.", "", "a"], ["p2", "Add 2+2", "5", "4", "", "B"]]
    with open(sheet, "w", encoding="utf-8-sig", newline="") as f:  # what Excel's "CSV UTF-8" writes
        csv.writer(f).writerows(rows)
    assert sheet.read_bytes().startswith(b"\xef\xbb\xbf")
    result = label.import_sheet(sheet, label.get_schema("preference"))
    assert result.errors == [] and [r["id"] for r in result.records] == ["p1", "p2"]
    assert result.records[1]["chosen"] == "4"


def test_sharegpt_record_with_a_list_in_from_drops_one_line(tmp_path):
    src = tmp_path / "chats.jsonl"
    good = {"conversations": [{"from": "human", "value": "Hello there"}, {"from": "gpt", "value": "Hi, how can I help?"}]}
    bad = {"conversations": [{"from": ["human"], "value": "x"}, {"from": "gpt", "value": "y"}]}
    src.write_text("\n".join(json.dumps(r) for r in (good, bad, {**good, "id": 2})) + "\n")
    report, kept = _process(src)
    assert (report.read, report.kept, dict(report.dropped)) == (3, 1, {"malformed": 1, "duplicate_exact": 1})
    assert report.malformed == [f"{src}:2: sharegpt record: conversations[0] has from=['human']; expected human, "
                                "gpt or system"]


def test_u2028_inside_a_string_is_one_line(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": "first a\u2028b"}, ensure_ascii=False) + "\n"
                   + json.dumps({"text": "second c\u2029d\x85e"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert [obj["text"] for _, obj, _ in read_jsonl(src)] == ["first a\u2028b", "second c\u2029d\x85e"]
    report, kept = _process(src)
    assert (report.read, report.kept) == (2, 2)
    assert kept[0]["text"] == "first a\nb"  # cleaning turns the separator into a newline, after reading


def test_csv_cells_over_128_kib_and_over_the_stated_limit(tmp_path):
    src = tmp_path / "big.csv"
    with open(src, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerows([["text"], ["x" * 200_000], ["y" * (MAX_CELL_CHARS + 1) + "\nwith, a newline"], ["after"]])
    got = list(read_csv(src))
    assert [(line, row and len(row["text"]), bool(err)) for line, row, err in got] == \
        [(2, 200_000, False), (3, None, True), (5, 5, False)]
    assert "longer than 8388608 characters" in got[1][2]


def test_truncated_gzip_keeps_the_records_before_the_damage(tmp_path):
    rows = [{"text": f"record number {i} about rivers"} for i in range(2000)]
    blob = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    src = tmp_path / "in.jsonl.gz"
    src.write_bytes(blob[: len(blob) // 2])
    report, kept = _process(src, format="text", gopher=False)
    assert 0 < report.kept < 2000 and kept[0]["text"] == "record number 0 about rivers"
    assert report.dropped["malformed"] == 1 and "compressed file damaged" in report.malformed[0]
    assert [k["text"] for k in kept] == [r["text"] for r in rows[: report.kept]]


def test_deep_nesting_and_lone_surrogates_drop_one_line_each(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "ok one"}\n' + "[" * 100_000 + "]" * 100_000 + '\n{"text": "bad \\ud800"}\n'
                   '{"text": "pair \\ud83d\\ude00 is fine"}\n')
    report, kept = _process(src)
    assert [k["text"] for k in kept] == ["ok one", "pair \U0001F600 is fine"]
    assert [m.split(": ", 1)[1] for m in report.malformed] == [
        "not readable: nested deeper than 64 levels",
        "holds a lone surrogate escape (\\ud800-\\udfff without its pair): not valid Unicode"]


def test_eval_and_training_files_read_the_same_way(tmp_path):
    """load.read_jsonl (training, eval tasks) splits the same way and names every bad line; it still stops."""
    from lifecycle.data.load import read_jsonl as load_jsonl
    from lifecycle.errors import UserError

    src = tmp_path / "task.jsonl"
    src.write_bytes(b'\xef\xbb\xbf{"prompt": "a\xe2\x80\xa8b"}\n{"prompt": "c"}\n')
    assert load_jsonl(src) == [{"prompt": "a\u2028b"}, {"prompt": "c"}]
    src.write_bytes(b'{"prompt": "a"}\n\xff\n[1]\n{"p\n')
    with pytest.raises(UserError) as e:
        load_jsonl(src)
    assert str(e.value).startswith(f"{src}:2: not valid UTF-8") and f"{src}:3: expected a JSON object" in str(e.value)
