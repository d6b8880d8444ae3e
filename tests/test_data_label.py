"""Labelling sheets: export, fill in, import back; errors by row; preference pairs usable by DPO."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.data import label
from lifecycle.data.load import PREFERENCE_FIELDS, load_records
from lifecycle.data.prepare import PrepareConfig, run
from lifecycle.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "data"
CHOSEN = {"5", "10", "Paris"}


def _dataset(tmp_path, fixture, name):
    cfg = PrepareConfig(inputs=[str(FIX / fixture)], validation_fraction=0, test_fraction=0, save_hf=False)
    return run(cfg, tmp_path / name)


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.mark.integration
def test_preference_round_trip_feeds_dpo(tmp_path):
    from lifecycle.data.records import read_normalised

    ds = _dataset(tmp_path, "preference.jsonl", "prefs")
    sheet = tmp_path / "pairs.csv"
    n, skipped = label.export_sheet(read_normalised(str(ds)), label.get_schema("preference"), sheet, seed=3)
    assert (n, skipped) == (3, 0)
    rows = _read_csv(sheet)
    assert list(rows[0]) == ["id", "prompt", "response_a", "response_b", "context", "preference", "note"]
    assert json.loads(label.schema_path(sheet).read_text())["labels"] == ["a", "b", "tie"]
    for row in rows:  # a person prefers the original chosen answer, wherever the shuffle put it
        row["preference"] = "a" if row["response_a"] in CHOSEN else "b"
    _write_csv(sheet, rows)
    out = tmp_path / "human-prefs"
    result = label.write_import(sheet, label.load_schema_for(sheet, None, None), out)
    assert result.errors == [] and len(result.records) == 3
    records = load_records(str(out), PREFERENCE_FIELDS)
    assert {r["chosen"][0]["content"] for r in records} == CHOSEN
    assert all(r["prompt"][0]["role"] == "user" for r in records)


@pytest.mark.unit
def test_import_reports_every_bad_row(tmp_path, capsys):
    sheet = tmp_path / "bad.csv"
    base = {"id": "", "prompt": "Q?", "response_a": "x", "response_b": "y", "context": "", "preference": "a", "note": ""}
    rows = [dict(base, id="p1"), dict(base, id="p2", preference="maybe"), dict(base, id="p3", response_b=""),
            dict(base, id="p1", preference="b"), dict(base, id="p5", preference="tie"), dict(base, id="p6", preference="")]
    _write_csv(sheet, rows)
    schema = label.get_schema("preference")
    result = label.import_sheet(sheet, schema)
    assert result.errors == [
        f"{sheet}:3: unknown preference 'maybe' (allowed: a, b, tie)",
        f"{sheet}:4: missing field(s) response_b",
        f"{sheet}:5: duplicate id 'p1' (first at line 2)",
        f"{sheet}:7: missing field 'preference' (the label; or pass --skip-unlabelled)",
    ]
    assert result.ties == 1 and len(result.records) == 1
    with pytest.raises(UserError, match="4 invalid row"):
        label.write_import(sheet, schema, tmp_path / "out")
    assert f"{sheet}:3: unknown preference" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    result = label.write_import(sheet, schema, tmp_path / "out", skip_invalid=True)
    assert load_records(str(tmp_path / "out"), PREFERENCE_FIELDS) == [
        {"prompt": "Q?", "chosen": "x", "rejected": "y", "id": "p1"}]


@pytest.mark.integration
def test_classification_sheet_jsonl(tmp_path):
    from lifecycle.data.records import read_normalised

    ds = _dataset(tmp_path, "text.txt", "texts")
    sheet = tmp_path / "cls.jsonl"
    with pytest.raises(UserError, match="--labels"):
        label.get_schema("classification")
    label.export_sheet(read_normalised(str(ds)), label.get_schema("classification", ["food", "other"]), sheet)
    rows = [json.loads(x) for x in sheet.read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["label"] == ""
    for row, lab in zip(rows, ["food", "other", "food"]):
        row["label"] = lab
    rows.append({"id": "extra", "text": "x", "label": "animal"})
    sheet.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    result = label.import_sheet(sheet, label.load_schema_for(sheet, None, None))
    assert result.errors == [f"{sheet}:4: unknown label 'animal' (allowed: food, other)",
                             f"{sheet}:5: not valid JSON (Expecting property name enclosed in double quotes: column 2)"]
    assert [r["label"] for r in result.records] == ["food", "other", "food"]


@pytest.mark.integration
def test_instruction_and_dialogue_ratings(tmp_path):
    from lifecycle.data.records import read_normalised

    ds = _dataset(tmp_path, "sharegpt.json", "chats")
    recs = read_normalised(str(ds))
    sheet = tmp_path / "rate.csv"
    label.export_sheet(recs, label.get_schema("instruction"), sheet)
    rows = _read_csv(sheet)
    assert rows[2]["instruction"] == "Another?" and rows[2]["output"] == "Octopuses have three hearts."
    for row, rating in zip(rows, ["5", "6", "1"]):
        row["rating"] = rating
    _write_csv(sheet, rows)
    result = label.import_sheet(sheet, label.get_schema("instruction"))
    assert result.errors == [f"{sheet}:3: unknown rating '6' (allowed: 1, 2, 3, 4, 5)"]
    assert result.records[0]["rating"] == 5
    dsheet = tmp_path / "dialogue.jsonl"
    label.export_sheet(recs, label.get_schema("dialogue"), dsheet)
    rows = [dict(json.loads(x), rating="4") for x in dsheet.read_text().splitlines()]
    rows[1]["messages"] = "[broken"
    dsheet.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = label.import_sheet(dsheet, label.get_schema("dialogue"))
    assert len(result.errors) == 1 and result.errors[0].startswith(f"{dsheet}:2: field 'messages'")
    assert result.records[0]["messages"] == recs[0]["messages"]


@pytest.mark.integration
def test_cli_label_export_import(tmp_path):
    ds = _dataset(tmp_path, "preference.jsonl", "prefs")
    env = {**os.environ, "LIFECYCLE_NO_PROGRESS": "1"}
    sheet = tmp_path / "pairs.csv"
    r = subprocess.run([sys.executable, "-m", "lifecycle.cli", "data", "label", "export", "-i", str(ds),
                        "--schema", "preference", "-o", str(sheet)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "wrote 3 rows" in r.stdout
    r = subprocess.run([sys.executable, "-m", "lifecycle.cli", "data", "label", "import", "-i", str(sheet),
                        "-o", str(tmp_path / "imp")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "3 invalid row(s)" in r.stderr and "pairs.csv:2: missing field 'preference'" in r.stderr
