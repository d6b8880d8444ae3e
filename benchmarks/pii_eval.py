"""Precision and recall of PII redaction on the labelled set shipped in tests/fixtures/pii_labelled.jsonl.

    python benchmarks/pii_eval.py            # the current rules, and the old "9+ digits" rule for comparison

Each line of the set is {"text", "pii": [{"kind", "value"}]}: 92 short texts written for this project (public
card test numbers, IBAN documentation examples, fictional 555 and drama-range phone numbers, SSNs that pass
the format rules) and 43 texts with ordinary numbers (order numbers, timestamps, ISBNs, hashes, prices).
A predicted span is a true positive when it overlaps a labelled span; "redaction" ignores the kind (was the
PII removed?), "by kind" requires it. Precision = true predicted spans / predicted spans; recall = labelled
spans found / labelled spans.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SET = ROOT / "tests" / "fixtures" / "pii_labelled.jsonl"

# The rule this replaced (lifecycle/data/clean.py before the change), kept here verbatim as the baseline.
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
OLD_PATTERNS = (
    ("EMAIL", re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")),
    ("IP", re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w.]|\.\d)")),
    ("IP", re.compile(r"(?<![\w:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|"
                      r"(?:[0-9A-Fa-f]{1,4}:){1,7}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?|"
                      r"::[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})(?![\w:])")),
    ("PHONE", re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){1,4}|"
                         r"\(\d{3}\)\s?\d{3}[\s.-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4}|0\d{2,4}[\s/-]\d{3,8})(?![\w-])")),
    ("ID", re.compile(r"(?<![\w.])\d(?:[ -]?\d){8,}(?![\w.])")),
)


def old_find(text: str) -> list[tuple[int, int, str]]:
    """Spans the old rule replaced (it ran the patterns in turn on the text, so earlier kinds win)."""
    taken: list[tuple[int, int, str]] = []
    for kind, pattern in OLD_PATTERNS:
        for m in pattern.finditer(text):
            s, digits = m.group(0), sum(c.isdigit() for c in m.group(0))
            if kind == "IP" and ":" in s and digits == 0:
                continue
            if kind == "PHONE" and not 7 <= digits <= 15:
                continue
            if all(m.end() <= a or m.start() >= b for a, b, _ in taken):
                taken.append((m.start(), m.end(), kind))
    return taken


def score(find, rows: list[dict]) -> dict:
    tp_pred = pred = found = gold = 0
    by_kind: Counter = Counter()
    gold_kind: Counter = Counter()
    false_pos: list[str] = []
    missed: list[str] = []
    for row in rows:
        text = row["text"]
        spans = [(text.index(p["value"]), text.index(p["value"]) + len(p["value"]), p["kind"]) for p in row["pii"]]
        got = find(text)
        pred += len(got)
        for a, b, _ in got:
            if any(a < e and b > s for s, e, _ in spans):
                tp_pred += 1
            else:
                false_pos.append(f"{text[a:b]!r} in {text!r}")
        for s, e, kind in spans:
            gold += 1
            gold_kind[kind] += 1
            hit = [k for a, b, k in got if a < e and b > s]
            found += bool(hit)
            by_kind[kind] += kind in hit
            if not hit:
                missed.append(f"{kind} {text[s:e]!r}")
    return {"precision": round(tp_pred / max(1, pred), 3), "recall": round(found / max(1, gold), 3),
            "predicted": pred, "labelled": gold,
            "recall_by_kind": {k: f"{by_kind[k]}/{n}" for k, n in sorted(gold_kind.items())},
            "false_positives": false_pos, "missed": missed}


def load() -> list[dict]:
    return [json.loads(line) for line in SET.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    from lifecycle.data.pii import find_pii

    rows = load()
    for name, fn in (("old rule (9+ digits = ID)", old_find), ("current rules", find_pii)):
        r = score(fn, rows)
        print(f"{name}: precision {r['precision']} recall {r['recall']} ({r['predicted']} predicted, "
              f"{r['labelled']} labelled); recall by kind {r['recall_by_kind']}")
        for fp in r["false_positives"]:
            print(f"  false positive: {fp}")
        for m in r["missed"]:
            print(f"  missed: {m}")


if __name__ == "__main__":
    main()
