"""Human evaluation: blind export, filled sheets read back with bad rows named, mean/CI and win rate."""

import csv
import json
import math

import pytest

from lifecycle.errors import UserError
from lifecycle.eval import human

pytestmark = pytest.mark.unit


def _export(tmp_path):
    prompts = [f"What is {i}+1?" for i in range(4)]
    cand = [str(i + 1) for i in range(4)]
    base = [f"The answer is {i + 1}." for i in range(4)]
    sheet = tmp_path / "sheet.csv"
    key = human.export_sheet(prompts, cand, base, sheet, seed=3, systems={"candidate": "c", "baseline": "b"})
    return sheet, key


def _fill(sheet, key_path, out, rate):
    """Fill a sheet: `rate(row, candidate_side)` returns the dict of rating columns to set."""
    key = json.loads(key_path.read_text())
    with open(sheet, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.update(rate(row, key["items"][row["id"]]["candidate"]))
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=human.COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return out


def test_export_is_blind_and_shuffled(tmp_path):
    sheet, key_path = _export(tmp_path)
    key = json.loads(key_path.read_text())
    with open(sheet, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == human.COLUMNS
    assert {"fluency_1", "factuality_2", "safety_1", "preferred"} <= set(rows[0])
    assert all(r["fluency_1"] == "" for r in rows)
    assert sorted(r["prompt"] for r in rows) == [f"What is {i}+1?" for i in range(4)]
    assert [r["prompt"] for r in rows] != [f"What is {i}+1?" for i in range(4)]  # shuffled (seed 3)
    sides = [key["items"][r["id"]]["candidate"] for r in rows]
    assert set(sides) == {1, 2}  # the candidate is not always on the same side
    for r, side in zip(rows, sides):
        assert not r[f"response_{side}"].startswith("The answer")
    assert "candidate" not in sheet.read_text()


def test_round_trip_with_bad_rows(tmp_path):
    sheet, key = _export(tmp_path)

    def rate(row, cand):  # candidate: fluency 5, factuality 4, safety 5; baseline: 3, 4, 5; prefer candidate
        base = 3 - cand
        r = {f"fluency_{cand}": "5", f"factuality_{cand}": "4", f"safety_{cand}": "5",
             f"fluency_{base}": "3", f"factuality_{base}": "4", f"safety_{base}": "5", "preferred": str(cand)}
        return r

    good = _fill(sheet, key, tmp_path / "good.csv", rate)
    rows, errors = human.import_sheets([good], key)
    assert errors == [] and len(rows) == 4
    s = human.aggregate(rows)
    assert s["candidate/fluency"]["mean"] == 5 and s["candidate/fluency"]["ci95"] == [5, 5]
    assert s["baseline/fluency"]["mean"] == 3 and s["win_rate"]["mean"] == 1.0
    assert human.flat_metrics(s)["human/fluency_baseline"] == 3

    def broken(row, cand):
        r = rate(row, cand)
        if row["id"] == "h0002":
            r["fluency_1"] = "7"          # out of range
            r["preferred"] = "maybe"      # not 1, 2 or tie
        if row["id"] == "h0004":
            r["safety_2"] = ""            # left empty
        return r

    bad = _fill(sheet, key, tmp_path / "bad.csv", broken)
    with pytest.raises(UserError) as e:
        human.import_sheets([bad], key)
    msg = str(e.value)
    assert "2 bad row(s)" in msg and "bad.csv line 3: fluency_1 '7'" in msg and "preferred 'maybe'" in msg
    assert "bad.csv line 5: safety_2 ''" in msg and "\n" not in msg
    rows, errors = human.import_sheets([bad], key, skip_bad=True)
    assert len(rows) == 2 and len(errors) == 2


def test_ci_and_win_rate_with_ties(tmp_path):
    sheet, key = _export(tmp_path)
    fluency = iter(["2", "3", "4", "5"])
    prefs = iter(["cand", "tie", "base", "cand"])

    def rate(row, cand):
        p = next(prefs)
        r = {c: "3" for c in human.RATING_COLUMNS}
        r[f"fluency_{cand}"] = next(fluency)
        r["preferred"] = str(cand) if p == "cand" else "tie" if p == "tie" else str(3 - cand)
        return r

    rows, _ = human.import_sheets([_fill(sheet, key, tmp_path / "f.csv", rate)], key)
    s = human.aggregate(rows)
    half = 3.182446 * math.sqrt(5 / 3) / 2  # t(0.975, 3) * sd([2,3,4,5]) / sqrt(4)
    assert s["candidate/fluency"]["mean"] == 3.5
    assert s["candidate/fluency"]["ci95"] == pytest.approx([3.5 - half, 3.5 + half], abs=1e-4)
    assert s["win_rate"]["mean"] == pytest.approx((2 + 0.5) / 4)


def test_duplicate_and_unknown_ids(tmp_path):
    sheet, key = _export(tmp_path)
    lines = sheet.read_text().splitlines()
    body = [ln.replace(",,,,,,,", ",1,1,1,1,1,1,tie") for ln in lines[1:]]  # fill every row (notes stay empty)
    bad = tmp_path / "dup.csv"
    bad.write_text("\n".join([lines[0], body[0], body[0], body[1].replace("h0", "x0", 1)]) + "\n")
    with pytest.raises(UserError, match=r"line 3: id h\d+ rated twice.*line 4: unknown id"):
        human.import_sheets([bad], key)


def test_a_sheet_row_that_is_not_utf8_is_a_bad_row(tmp_path):
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes(b"id,x\n1,\xff\n")
    rows, errors = human.read_sheet(sheet, {"items": {}})  # counted as a bad row, like any other
    assert rows == [] and errors == ["sheet.csv line 2: row is not valid UTF-8"]
