"""Input formats and file types: detection, normalisation, and malformed records reported by line."""

import json
from pathlib import Path

import pytest

from lifecycle.data import formats
from lifecycle.data.collect import read, sources
from lifecycle.errors import UserError

pytestmark = pytest.mark.unit

FIX = Path(__file__).parent / "fixtures" / "data"


def _items(path, **kw):
    out = []
    for src in sources([str(path)]):
        out += list(read(src, **kw))
    return out


@pytest.mark.parametrize("obj,fmt", [
    ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
    ({"conversations": [{"from": "human", "value": "hi"}]}, "sharegpt"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "messages"),
    ({"prompt": "p", "chosen": "a", "rejected": "b"}, "preference"),
    ({"chosen": [], "rejected": []}, "preference"),
    ({"text": "plain"}, "text"),
    ("a bare string", "text"),
    ({"foo": 1}, None),
])
def test_detect_one(obj, fmt):
    assert formats.detect_one(obj) == fmt


def test_detect_takes_the_majority():
    sample = [{"instruction": "a", "output": "b"}] * 3 + [{"text": "x"}]
    assert formats.detect(sample) == "alpaca"
    assert formats.detect([{"foo": 1}]) is None


def test_alpaca_merges_input_and_keeps_system():
    rec = formats.normalise({"system": "S", "instruction": "Translate.", "input": "Hi", "output": "Salut"}, "alpaca")
    assert rec == {"messages": [{"role": "system", "content": "S"},
                                {"role": "user", "content": "Translate.\n\nHi"},
                                {"role": "assistant", "content": "Salut"}]}


def test_sharegpt_maps_roles_and_rejects_unknown():
    rec = formats.normalise({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
                            "sharegpt")
    assert [m["role"] for m in rec["messages"]] == ["user", "assistant"]
    with pytest.raises(formats.FormatError, match="from='alien'"):
        formats.normalise({"conversations": [{"from": "alien", "value": "q"}]}, "sharegpt")


def test_messages_validates_role_and_content():
    with pytest.raises(formats.FormatError, match="role 'wizard'"):
        formats.normalise({"messages": [{"role": "wizard", "content": "x"}]}, "messages")
    with pytest.raises(formats.FormatError, match="content must be a string"):
        formats.normalise({"messages": [{"role": "user", "content": 3}]}, "messages")


def test_preference_strings_messages_and_implicit_prompt():
    assert formats.normalise({"prompt": "p", "chosen": "a", "rejected": "b"}, "preference") == \
        {"prompt": "p", "chosen": "a", "rejected": "b"}
    implicit = {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
                "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}]}
    rec = formats.normalise(implicit, "preference")
    assert rec["prompt"] == [{"role": "user", "content": "q"}]
    assert rec["chosen"] == [{"role": "assistant", "content": "good"}]
    with pytest.raises(formats.FormatError, match="identical"):
        formats.normalise({"prompt": "p", "chosen": "a", "rejected": "a"}, "preference")
    with pytest.raises(formats.FormatError, match="missing field 'prompt'"):
        formats.normalise({"chosen": "a", "rejected": "b"}, "preference")


def test_unify_preference_makes_all_conversational():
    recs = [{"prompt": "p", "chosen": "a", "rejected": "b"},
            {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "c"}],
             "rejected": [{"role": "assistant", "content": "d"}]}]
    formats.unify_preference(recs)
    assert recs[0] == {"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "assistant", "content": "a"}],
                       "rejected": [{"role": "assistant", "content": "b"}]}


def test_jsonl_malformed_lines_have_line_numbers():
    items = _items(FIX / "alpaca.jsonl")
    assert len(items) == 10
    bad = [i for i in items if i.error]
    assert [i.where for i in bad] == [f"{FIX / 'alpaca.jsonl'}:6"]
    assert "not valid JSON" in bad[0].error


def test_json_list_and_wrapped_list(tmp_path):
    assert len(_items(FIX / "sharegpt.json")) == 4
    p = tmp_path / "wrapped.json"
    p.write_text(json.dumps({"data": [{"text": "a"}, {"text": "b"}]}))
    assert [i.obj for i in _items(p)] == [{"text": "a"}, {"text": "b"}]
    p.write_text("{broken")
    (item,) = _items(p)
    assert item.error and item.where == f"{p}:1"


def test_csv_rows_line_numbers_and_json_cells(tmp_path):
    items = _items(FIX / "alpaca.csv")
    assert [i.where.rsplit(":", 1)[1] for i in items] == ["2", "3", "4", "5"]
    assert items[1].obj["instruction"] == "Say hello, politely."
    assert "more cells" in items[2].error
    p = tmp_path / "chat.csv"
    p.write_text('id,messages\n1,"[{""role"": ""user"", ""content"": ""hi""}]"\n')
    assert _items(p)[0].obj["messages"] == [{"role": "user", "content": "hi"}]


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(5)]), p)
    items = _items(p)
    assert [i.obj["output"] for i in items] == [f"a{i}" for i in range(5)]
    assert items[3].where.endswith(":row 3")


def test_plain_text_units():
    assert [i.obj for i in _items(FIX / "text.txt", text_unit="paragraph")][1] == \
        "The quick brown fox jumps over the lazy dog.\nIt then runs into the forest."
    assert [i.where.rsplit(":", 1)[1] for i in _items(FIX / "text.txt")] == ["1", "3", "6"]
    assert len(_items(FIX / "text.txt", text_unit="line")) == 4
    assert len(_items(FIX / "text.txt", text_unit="document")) == 1


def test_html_file_keeps_main_text_only():
    (item,) = _items(FIX / "page.html")
    assert "Tomatoes need full sun" in item.obj
    assert "tracking" not in item.obj and "Contact" not in item.obj


def test_hf_dataset_saved_to_disk(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list([{"text": "a"}, {"text": "b"}]),
                 "test": Dataset.from_list([{"text": "c"}])}).save_to_disk(str(tmp_path / "hfds"))
    items = _items(tmp_path / "hfds")
    assert sorted(i.obj["text"] for i in items) == ["a", "b", "c"]
    assert any("[train]#1" in i.where for i in items)


def test_folder_walk_skips_unknown_files(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("y\n")
    (tmp_path / "notes.docx").write_text("?")
    skipped = []
    srcs = sources([str(tmp_path)], skipped)
    assert [s.kind for s in srcs] == ["jsonl", "text"]
    assert skipped == [str(tmp_path / "notes.docx")]


def test_missing_and_unknown_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        sources([str(tmp_path / "nope.jsonl")])
    (tmp_path / "x.docx").write_text("?")
    with pytest.raises(UserError, match="unknown file type"):
        sources([str(tmp_path / "x.docx")])


def test_invalid_utf8_is_reported_not_replaced(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n\xef\xbb\xbf{"text": "bom mid-file"}\n')
    items = _items(p)
    assert items[0].obj == {"text": "ok"}
    assert items[1].where == f"{p}:2" and items[1].error == "not valid UTF-8 (byte 0xe9 at column 14)"
    t = tmp_path / "bad.txt"
    t.write_bytes(b"fine paragraph\n\nbroken \xff byte\n")
    good, bad = _items(t)  # one bad byte costs its line, not the file
    assert good.obj == "fine paragraph" and bad.where == f"{t}:3"
    assert bad.error.startswith("not valid UTF-8 (byte 0xff")


def test_odd_values_are_format_errors_not_crashes(tmp_path):
    with pytest.raises(formats.FormatError, match="got list"):
        formats.normalise([1, 2], "text")
    p = tmp_path / "t.csv"
    p.write_text('text\n"[1, 2] is a list"\n"[citation needed]"\n')
    assert [i.obj["text"] for i in _items(p)] == ["[1, 2] is a list", "[citation needed]"]
