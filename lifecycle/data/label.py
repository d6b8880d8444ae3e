"""Labelling sheets for people: export rows to rate or pairs to prefer, import them back with validation.

    lifecycle data label export --input out/ds --schema preference --output pairs.csv
    lifecycle data label import --input pairs.csv --output out/human-prefs    # a dataset artifact for DPO

Schemas: `instruction` (rate an answer 1-5), `dialogue` (rate a conversation 1-5), `classification` (pick
one of `--labels`) and `preference` (which of two answers is better: a, b or tie). Export writes the sheet
(CSV or JSONL) and `<sheet>.schema.json` beside it; import reads that file, so the label set travels with
the sheet. Every problem on import (unknown label, missing field, duplicate id, bad JSON) is reported by
row as `sheet.csv:LINE: what is wrong`.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

from lifecycle.atomic import write_text_atomic
from lifecycle.errors import UserError

RATINGS = ("1", "2", "3", "4", "5")


@dataclass(frozen=True)
class Schema:
    name: str
    columns: tuple[str, ...]   # shown to the labeller, in order (id first)
    required: tuple[str, ...]  # must be non-empty on import
    label: str                 # the column the labeller fills in
    labels: tuple[str, ...]    # allowed values (classification: given by --labels)


SCHEMAS = {
    "instruction": Schema("instruction", ("id", "instruction", "output"), ("id", "instruction", "output"),
                          "rating", RATINGS),
    "dialogue": Schema("dialogue", ("id", "conversation", "messages"), ("id", "messages"), "rating", RATINGS),
    "classification": Schema("classification", ("id", "text"), ("id", "text"), "label", ()),
    "preference": Schema("preference", ("id", "prompt", "response_a", "response_b", "context"),
                         ("id", "prompt", "response_a", "response_b"), "preference", ("a", "b", "tie")),
}


def get_schema(name: str, labels: list[str] | None = None) -> Schema:
    if name not in SCHEMAS:
        raise UserError(f"unknown label schema '{name}'; use one of {', '.join(SCHEMAS)}")
    schema = SCHEMAS[name]
    if labels:
        schema = Schema(schema.name, schema.columns, schema.required, schema.label, tuple(labels))
    if not schema.labels:
        raise UserError(f"schema '{name}' needs its label set: pass --labels a,b,c")
    return schema


def _render(messages: list[dict]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def _plain(value: str | list[dict]) -> str:
    return value if isinstance(value, str) else "\n".join(m["content"] for m in value)


def _row(rec: dict, schema: Schema, rng: random.Random) -> dict | None:
    """One sheet row from a normalised record, or None when the record cannot fill this schema."""
    from lifecycle.data.formats import as_messages, joined

    if schema.name == "classification":
        return {"text": joined(rec)}
    if schema.name == "preference":
        if "chosen" not in rec:
            return None
        a, b = rec["chosen"], rec["rejected"]
        if rng.random() < 0.5:  # shuffled so that the labeller cannot learn "a is the original choice"
            a, b = b, a
        prompt = rec["prompt"]
        return {"prompt": prompt if isinstance(prompt, str) else _render(prompt),
                "response_a": _plain(a), "response_b": _plain(b),
                "context": "" if isinstance(prompt, str) else json.dumps(as_messages(prompt, "user"),
                                                                         ensure_ascii=False)}
    if "messages" not in rec:
        return None
    msgs = rec["messages"]
    if schema.name == "dialogue":
        return {"conversation": _render(msgs), "messages": json.dumps(msgs, ensure_ascii=False)}
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
    user = [m for m in msgs[:last or 0] if m["role"] == "user"]
    if last is None or not user:
        return None
    return {"instruction": user[-1]["content"], "output": msgs[last]["content"]}


def sheet_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise UserError(f"sheet {path} must end in .csv or .jsonl")
    return suffix[1:]


def export_sheet(records: list[dict], schema: Schema, path: Path, seed: int = 0) -> tuple[int, int]:
    """Write the sheet and its schema file; return (rows written, records that did not fit the schema)."""
    fmt = sheet_format(path)
    rng = random.Random(seed)
    rows, skipped = [], 0
    for rec in records:
        row = _row(rec, schema, rng)
        if row is None:
            skipped += 1
            continue
        rows.append({"id": f"{schema.name[:4]}-{len(rows):05d}", **row, schema.label: "", "note": ""})
    if not rows:
        raise UserError(f"no record fits the '{schema.name}' schema (preference needs prompt/chosen/rejected, "
                        "instruction and dialogue need messages)")
    header = list(rows[0])
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    write_text_atomic(path, text)
    meta = {"schema": schema.name, "label": schema.label, "labels": list(schema.labels), "columns": header}
    write_text_atomic(schema_path(path), json.dumps(meta, indent=2) + "\n")
    return len(rows), skipped


def schema_path(sheet: Path) -> Path:
    return sheet.with_name(sheet.name + ".schema.json")


def _read_rows(path: Path) -> list[tuple[int, dict | None, str | None]]:
    """(line, row, error) per row of a CSV or JSONL sheet (a BOM from Excel is skipped; see lifecycle.readers)."""
    from lifecycle.readers import read_csv, read_jsonl

    if sheet_format(path) == "csv":
        return list(read_csv(path))
    return [(line, obj, None) if isinstance(obj, dict) else (line, None, error or "not a JSON object")
            for line, obj, error in read_jsonl(path)]


def _check_types(row: dict, schema: Schema) -> str | None:
    """What is wrong with a JSONL row's field types (CSV cells are always text), or None."""
    for c in (*schema.required, "context", schema.label):
        value = row.get(c)
        if value is None or isinstance(value, str):
            continue
        if c in ("messages", "context") and isinstance(value, list):
            continue
        if c in ("id", schema.label) and type(value) is int:  # an id or rating written as a number
            continue
        return f"field '{c}' must be text, got {type(value).__name__}"
    return None


def _json_field(row: dict, key: str):
    """A field holding JSON text (or already a list): its value, or ValueError saying what is wrong."""
    from lifecycle.readers import parse

    value = row[key]
    if not isinstance(value, str):
        return value
    obj, error = parse(value)
    if error is not None:
        raise ValueError(f"field '{key}' is not a valid message list ({error})")
    return obj


def _record(row: dict, schema: Schema, label: str) -> dict | None:
    """The training record for a valid row; None for a preference tie. Raises ValueError on bad content."""
    if schema.name == "classification":
        return {"text": row["text"], "label": label}
    if schema.name == "instruction":
        return {"messages": [{"role": "user", "content": row["instruction"]},
                             {"role": "assistant", "content": row["output"]}], "rating": int(label)}
    if schema.name == "dialogue":
        from lifecycle.data.formats import FormatError, normalise

        try:
            return {**normalise({"messages": _json_field(row, "messages")}, "messages"), "rating": int(label)}
        except FormatError as e:
            raise ValueError(f"field 'messages' is not a valid message list ({e})") from None
    if label == "tie":
        return None
    chosen, rejected = row["response_a"], row["response_b"]
    if label == "b":
        chosen, rejected = rejected, chosen
    context = row.get("context") or ""
    if context:
        from lifecycle.data.formats import FormatError, normalise

        try:
            pref = {"prompt": _json_field(row, "context"), "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}]}
            return normalise(pref, "preference")
        except FormatError as e:
            raise ValueError(f"field 'context' is not a valid message list ({e})") from None
    return {"prompt": row["prompt"], "chosen": chosen, "rejected": rejected}


@dataclass
class ImportResult:
    records: list[dict]
    errors: list[str]
    rows: int
    labels: dict
    ties: int
    unlabelled: int


def import_sheet(path: Path, schema: Schema, skip_unlabelled: bool = False) -> ImportResult:
    """Validate every row; collect all errors (by line) instead of stopping at the first."""
    if not path.is_file():
        raise UserError(f"sheet {path} not found")
    records, errors, seen = [], [], {}
    counts: dict[str, int] = {}
    ties = unlabelled = 0
    rows = _read_rows(path)
    for line, row, err in rows:
        where = f"{path}:{line}"
        if err:
            errors.append(f"{where}: {err}")
            continue
        bad_type = _check_types(row, schema)
        if bad_type:
            errors.append(f"{where}: {bad_type}")
            continue
        missing = [c for c in schema.required if not str(row.get(c) or "").strip()]
        if missing:
            errors.append(f"{where}: missing field(s) {', '.join(missing)}")
            continue
        rid = str(row["id"]).strip()
        if rid in seen:
            errors.append(f"{where}: duplicate id '{rid}' (first at line {seen[rid]})")
            continue
        seen[rid] = line
        label = str(row.get(schema.label) or "").strip()
        if schema.name != "classification":  # ratings and a/b/tie are case-blind; class names are not
            label = label.lower()
        if not label:
            if skip_unlabelled:
                unlabelled += 1
                continue
            errors.append(f"{where}: missing field '{schema.label}' (the label; or pass --skip-unlabelled)")
            continue
        if label not in schema.labels:
            errors.append(f"{where}: unknown {schema.label} '{label}' (allowed: {', '.join(schema.labels)})")
            continue
        try:
            rec = _record(row, schema, label)
        except ValueError as e:
            errors.append(f"{where}: {e}")
            continue
        counts[label] = counts.get(label, 0) + 1
        if rec is None:
            ties += 1
            continue
        records.append({**rec, "id": rid})
    return ImportResult(records, errors, len(rows), counts, ties, unlabelled)


def load_schema_for(sheet: Path, name: str | None, labels: list[str] | None) -> Schema:
    """The schema named on the command line, else the one saved beside the sheet at export."""
    meta = {}
    if schema_path(sheet).is_file():
        meta = json.loads(schema_path(sheet).read_text())
    name = name or meta.get("schema")
    if not name:
        raise UserError(f"no {schema_path(sheet).name} beside the sheet; pass --schema")
    return get_schema(name, labels or meta.get("labels") or None)


def write_import(sheet: Path, schema: Schema, out: Path, skip_invalid: bool = False,
                 skip_unlabelled: bool = False, overwrite: bool = False) -> ImportResult:
    """Import a sheet into a dataset artifact (`train.jsonl`); invalid rows are listed and stop it unless skipped."""
    import sys

    from lifecycle.artifact import sha256_file, write_artifact

    result = import_sheet(sheet, schema, skip_unlabelled)
    for line in result.errors[:50]:
        print(line, file=sys.stderr)
    if result.errors and not skip_invalid:
        raise UserError(f"{len(result.errors)} invalid row(s) in {sheet} (listed above); fix them, "
                        "or pass --skip-invalid to import only the valid rows")
    if not result.records:
        raise UserError(f"no usable row in {sheet} (ties and unlabelled rows make no record)")
    kind = {"preference": "preference", "classification": "text"}.get(schema.name, "chat")
    summary = {"rows": result.rows, "records": len(result.records), "invalid": len(result.errors),
               "ties": result.ties, "unlabelled": result.unlabelled, "labels": result.labels}
    extra = {"kind": kind, "splits": {"train": len(result.records)},
             "inputs": [{"input": str(sheet), "kind": "sheet", "sha256": sha256_file(sheet), "records": result.rows}]}
    with write_artifact(out, format="dataset", stage="data-label-import", overwrite=overwrite,
                        options={"schema": schema.name, "labels": list(schema.labels)},
                        metrics={**{k: v for k, v in summary.items() if k != "labels"},
                                 "records_train": len(result.records)},
                        extra=extra) as tmp:
        (tmp / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.records),
                                         encoding="utf-8")
        (tmp / "import_report.json").write_text(json.dumps({**summary, "errors": result.errors}, indent=2) + "\n")
    return result
