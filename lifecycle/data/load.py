"""Load training records for SFT and preference stages from a built-in builder, a JSONL file or a dataset artifact.

Specs:
- `builtin:sft`, `builtin:pref-style`, `builtin:pref-correctness`, `builtin:pref-mixed`: synthetic data;
- `builtin:pref-<kind>-heldout` (pairs on held-out sums), `builtin:kto-<kind>` (unpaired good/bad labels),
  `builtin:prompts` (questions with their answer, for RL);
- a `.jsonl` file: one JSON object per line;
- a dataset artifact directory (from `lifecycle data ...`): its `train.jsonl`.

Records are checked for the fields the stage needs; a bad line is reported by number, never skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from lifecycle.errors import UserError

SFT_FIELDS = ("messages",)
PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")
UNPAIRED_FIELDS = ("prompt", "completion", "label")
PROMPT_FIELDS = ("prompt",)
KINDS = ("style", "correctness", "mixed")


def load_records(spec: str, required: tuple[str, ...], n: int = 2000, seed: int = 0) -> list[dict]:
    if spec.startswith("builtin:"):
        records = _builtin(spec.split(":", 1)[1], n, seed)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            from lifecycle.artifact import Artifact

            art = Artifact.load(path)
            path = art.path / "train.jsonl"
            if not path.is_file():
                raise UserError(f"dataset artifact {art.path} has no train.jsonl")
        if not path.is_file():
            raise UserError(f"data file {spec} not found (or use builtin:sft / builtin:pref-style)")
        records = read_jsonl(path)
    check_fields(records, required, spec)
    return records


def _builtin(name: str, n: int, seed: int) -> list[dict]:
    from lifecycle.data import synth

    if name == "sft":
        return synth.sft_records(n, seed)
    if name.startswith("pref-"):
        kind = name[len("pref-"):]
        if kind in KINDS:
            return synth.preference_records(n, seed, kind)
        if kind.endswith("-heldout") and kind[:-len("-heldout")] in KINDS:
            return synth.preference_records(n, seed, kind[:-len("-heldout")], held_out=True)
    if name.startswith("kto-") and name[len("kto-"):] in KINDS:
        return synth.unpaired_records(n, seed, name[len("kto-"):])
    if name in ("prompts", "prompts-heldout"):
        return synth.prompt_records(n, seed, held_out=name.endswith("-heldout"))
    raise UserError(f"unknown built-in data 'builtin:{name}'; use builtin:sft, builtin:pref-style|"
                    "pref-correctness|pref-mixed (add -heldout for held-out sums), builtin:kto-style|"
                    "kto-correctness|kto-mixed or builtin:prompts")


def read_jsonl(path: Path) -> list[dict]:
    """Every line a JSON object (blank lines allowed). Bad lines stop the read: all are counted, the first
    few named as file:line, so a training or eval set is never silently smaller than its file."""
    from lifecycle.readers import read_jsonl as lines

    if not Path(path).is_file():
        raise UserError(f"data file {path} not found")
    records, bad = [], []
    for lineno, obj, error in lines(Path(path)):
        if error is None and not isinstance(obj, dict):
            error = f"expected a JSON object, got {type(obj).__name__}"
        if error is not None:
            bad.append(f"{path}:{lineno}: {error}")
        else:
            records.append(obj)
    _stop_on_bad(bad)
    if not records:
        raise UserError(f"{path} holds no records")
    return records


def read_csv_rows(path: Path, fieldnames: list[str] | None = None) -> list[tuple[int, dict]]:
    """Every data row of a CSV as (line, {column: cell}); the header is the first row unless `fieldnames`
    names the columns. Bad rows (not UTF-8, wrong cell count, unparseable) stop the read as in read_jsonl."""
    from lifecycle.readers import read_csv

    if not Path(path).is_file():
        raise UserError(f"data file {path} not found")
    rows, bad = [], []
    for lineno, row, error in read_csv(Path(path), fieldnames=fieldnames):
        if error is None:
            rows.append((lineno, row))
        else:
            bad.append(f"{path}:{lineno}: {error}")
    _stop_on_bad(bad)
    return rows


def _stop_on_bad(bad: list[str]) -> None:
    """One error naming the first few bad lines (file:line) and counting the rest."""
    if bad:
        more = f" (and {len(bad) - 3} more of {len(bad)} bad lines)" if len(bad) > 3 else ""
        raise UserError("; ".join(bad[:3]) + more)


def check_fields(records: list[dict], required: tuple[str, ...], source: str) -> None:
    for i, rec in enumerate(records, 1):
        missing = [f for f in required if f not in rec]
        if missing:
            raise UserError(f"{source}: record {i} lacks field(s) {', '.join(missing)}; this stage needs "
                            f"{', '.join(required)}")


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
