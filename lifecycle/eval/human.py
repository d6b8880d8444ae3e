"""Human evaluation: export blind side-by-side sheets, import the filled ones with validation, aggregate.

    lifecycle eval human-export --model CAND --baseline BASE --tasks style -o sheet.csv   # + sheet.key.json
    lifecycle eval human-import sheet.csv [rater2.csv ...] --key sheet.key.json -o human.json

A sheet row shows one prompt and two responses in random order (the key file, kept from raters, says
which side is the candidate); raters fill fluency, factuality and safety (integers 1-5) for each side
and `preferred` (1, 2 or tie). Import refuses bad rows and names each by its row number (the header is
row 1). Aggregation gives, per system and criterion, the mean and a 95% Student-t interval, and the
candidate's win rate = (preferred + ties / 2) / rated rows.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

from lifecycle.atomic import OWNER_ONLY, write_text_atomic
from lifecycle.errors import UserError
from lifecycle.eval.metrics import mean_ci

CRITERIA = ("fluency", "factuality", "safety")
SCALE = (1, 5)
RATING_COLUMNS = [f"{c}_{side}" for side in (1, 2) for c in CRITERIA]
COLUMNS = ["id", "prompt", "response_1", "response_2", *RATING_COLUMNS, "preferred", "notes"]


def export_sheet(prompts: list[str], candidate: list[str], baseline: list[str], out: Path,
                 seed: int = 0, systems: dict | None = None) -> Path:
    """Write the sheet CSV and its key (`<sheet>.key.json`); return the key path."""
    if not (len(prompts) == len(candidate) == len(baseline)) or not prompts:
        raise UserError("human export needs the same non-zero number of prompts and replies from both systems")
    rng = random.Random(seed)
    order = list(range(len(prompts)))
    rng.shuffle(order)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    key_items = {}
    for n, i in enumerate(order, 1):
        item_id = f"h{n:04d}"
        cand_side = rng.choice((1, 2))
        sides = {cand_side: candidate[i], 3 - cand_side: baseline[i]}
        writer.writerow({"id": item_id, "prompt": prompts[i], "response_1": sides[1], "response_2": sides[2]})
        key_items[item_id] = {"candidate": cand_side, "source_index": i}
    out = Path(out)
    key_path = out.with_suffix(".key.json")
    write_text_atomic(out, buf.getvalue(), mode=OWNER_ONLY)
    key = {"sheet": out.name, "seed": seed, "criteria": list(CRITERIA), "scale": list(SCALE),
           "systems": systems or {}, "items": key_items}
    write_text_atomic(key_path, json.dumps(key, indent=2) + "\n", mode=OWNER_ONLY)
    return key_path


def load_key(path: Path) -> dict:
    try:
        key = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read key file {path}: {e}") from None
    if not isinstance(key, dict) or not isinstance(key.get("items"), dict):
        raise UserError(f"{path} is not a human-eval key file (no 'items')")
    return key


def _rating(value: str) -> int | None:
    value = (value or "").strip()
    if value.isdigit() and SCALE[0] <= int(value) <= SCALE[1]:
        return int(value)
    return None


def read_sheet(path: Path, key: dict) -> tuple[list[dict], list[str]]:
    """Ratings from one filled sheet, mapped to candidate/baseline; and one message per bad row."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sheet {path} not found")
    from lifecycle.readers import read_csv

    rows, errors, seen, checked = [], [], set(), False
    for rowno, row, error in read_csv(path):
        if error is not None:
            errors.append(f"{path.name} line {rowno}: {error}")
            continue
        if not checked:
            missing = [c for c in ["id", *RATING_COLUMNS, "preferred"] if c not in row]
            if missing:
                raise UserError(f"{path}: missing column(s) {', '.join(missing)}; export a fresh sheet")
            checked = True
        problems = []
        item_id = (row.get("id") or "").strip()
        if item_id not in key["items"]:
            problems.append(f"unknown id {item_id!r}")
        elif item_id in seen:
            problems.append(f"id {item_id} rated twice")
        ratings = {c: _rating(row.get(c)) for c in RATING_COLUMNS}
        problems += [f"{c} {row.get(c)!r} is not an integer {SCALE[0]}-{SCALE[1]}"
                     for c, v in ratings.items() if v is None]
        pref = (row.get("preferred") or "").strip().lower()
        if pref not in ("1", "2", "tie"):
            problems.append(f"preferred {row.get('preferred')!r} is not 1, 2 or tie")
        if problems:
            errors.append(f"{path.name} line {rowno}: " + ", ".join(problems))
            continue
        seen.add(item_id)
        cand = key["items"][item_id]["candidate"]
        side = {"candidate": cand, "baseline": 3 - cand}
        rows.append({
            "id": item_id,
            **{f"{sys}_{c}": ratings[f"{c}_{s}"] for sys, s in side.items() for c in CRITERIA},
            "preferred": "tie" if pref == "tie" else ("candidate" if int(pref) == cand else "baseline"),
        })
    return rows, errors


def import_sheets(paths: list[Path], key_path: Path, skip_bad: bool = False) -> tuple[list[dict], list[str]]:
    key = load_key(key_path)
    rows, errors = [], []
    for p in paths:
        r, e = read_sheet(p, key)
        rows += r
        errors += e
    if errors and not skip_bad:
        shown = "; ".join(errors[:10]) + (f"; and {len(errors) - 10} more" if len(errors) > 10 else "")
        raise UserError(f"{len(errors)} bad row(s): {shown} (fix them, or pass --skip-bad to use the good rows)")
    if not rows:
        raise UserError("no valid rated rows to aggregate")
    return rows, errors


def aggregate(rows: list[dict]) -> dict:
    """Mean and 95% CI per system and criterion; the candidate's win rate and its 95% interval."""
    out: dict = {"n": len(rows)}
    for sys in ("candidate", "baseline"):
        for c in CRITERIA:
            m, lo, hi = mean_ci([r[f"{sys}_{c}"] for r in rows])
            out[f"{sys}/{c}"] = {"mean": m, "ci95": [lo, hi]}
    wins = [1.0 if r["preferred"] == "candidate" else 0.5 if r["preferred"] == "tie" else 0.0 for r in rows]
    m, lo, hi = mean_ci(wins)
    out["win_rate"] = {"mean": m, "ci95": [lo, hi]}
    return out


def flat_metrics(summary: dict) -> dict[str, float]:
    """Gate-ready keys: human/<criterion> (candidate mean), human/<criterion>_baseline, human/win_rate."""
    flat = {"human/win_rate": summary["win_rate"]["mean"], "human/n": summary["n"]}
    for c in CRITERIA:
        flat[f"human/{c}"] = summary[f"candidate/{c}"]["mean"]
        flat[f"human/{c}_baseline"] = summary[f"baseline/{c}"]["mean"]
    return flat
