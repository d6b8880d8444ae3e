"""Dedup on a planted set: 3 exact duplicates, 3 near-duplicates, 1 similar record below the threshold."""

import json
from pathlib import Path

import pytest

from lifecycle.data.dedup import Deduper, exact_key, shingles

pytestmark = pytest.mark.unit

PLANTED = Path(__file__).parent / "fixtures" / "data" / "planted_dups.jsonl"


def _run(dd):
    rows = [json.loads(line) for line in PLANTED.read_text().splitlines()]
    return rows, [dd.check(f"row{i}", r["text"]) for i, r in enumerate(rows)]


def test_exact_key_ignores_case_and_spacing_only():
    assert exact_key("Hello   World\n") == exact_key("hello world")
    assert exact_key("12+34=46") != exact_key("12+34=47")


def test_shingles():
    assert shingles("a b c", 5) == {b"a b c"}
    assert len(shingles("a b c d e f g", 5)) == 3
    assert len(shingles("abcd", 2, "char")) == 3


def test_planted_exact_and_near_counts():
    rows, results = _run(Deduper(exact=True, near=True, threshold=0.8, ngram=5))
    reasons = [r for r, _ in results]
    assert reasons.count("duplicate_exact") == 3
    assert reasons.count("duplicate_near") == 3
    for row, (reason, first) in zip(rows, results):
        if row["tag"].startswith("exact-of-"):
            assert reason == "duplicate_exact" and first == f"row{row['tag'].split('-')[-1]}"
        elif row["tag"].startswith("near-of-"):
            assert reason == "duplicate_near" and first == f"row{row['tag'].split('-')[-1]}"
        else:
            assert reason is None, row["tag"]


def test_exact_only_and_threshold():
    _, results = _run(Deduper(exact=True, near=False))
    assert [r for r, _ in results].count("duplicate_exact") == 3
    assert all(r != "duplicate_near" for r, _ in results)
    # A lower threshold also catches the record with two words changed (Jaccard ~0.77).
    _, results = _run(Deduper(exact=True, near=True, threshold=0.7))
    assert [r for r, _ in results].count("duplicate_near") == 4


def test_clusters_group_duplicates_under_the_kept_record():
    dd = Deduper()
    _run(dd)
    clusters = dd.clusters()
    assert clusters[0] == {"kept": "row1", "size": 3, "duplicates": [{"where": "row7", "match": "exact"},
                                                                      {"where": "row8", "match": "exact"}]}
    by_kept = {c["kept"]: c for c in clusters}
    assert by_kept["row2"]["size"] == 3 and {d["match"] for d in by_kept["row2"]["duplicates"]} == {"near"}
    assert sum(c["size"] - 1 for c in clusters) == 6
