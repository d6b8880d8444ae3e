"""The eval report: the JSON, and the table (metric, value, baseline, delta, rule, result).

Counts (keys ending in /n, /tokens, /checks, /subjects) are kept in the JSON but left out of the table.
"""

from __future__ import annotations

import json
from pathlib import Path

from lifecycle.atomic import OWNER_ONLY, write_text_atomic

COUNT_SUFFIXES = ("/n", "/tokens", "/checks", "/subjects")


def write_json(path: str | Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", mode=OWNER_ONLY)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table_rows(report: dict) -> list[list[str]]:
    """One row per shown metric (one per rule when several rules name it), then rules on missing metrics."""
    metrics, base = report.get("metrics", {}), report.get("baseline_metrics") or {}
    by_metric: dict[str, list[dict]] = {}
    for g in report.get("gates") or []:
        by_metric.setdefault(g["metric"], []).append(g)
    rows = []
    for key, value in metrics.items():
        if key.endswith(COUNT_SUFFIXES) and key not in by_metric:
            continue
        b = base.get(key)
        delta = value - b if isinstance(value, (int, float)) and isinstance(b, (int, float)) else None
        for g in by_metric.get(key) or [None]:
            rule = g["rule"].split(" ", 1)[1] if g else ""  # the metric is already in the first column
            result = ("pass" if g["passed"] else f"FAIL{' (' + g['reason'] + ')' if g['reason'] else ''}") if g else ""
            rows.append([key, _fmt(value), _fmt(b), "" if delta is None else f"{delta:+.4g}", rule, result])
    for key, gs in by_metric.items():
        if key not in metrics:
            rows += [[key, "-", _fmt(base.get(key)), "", g["rule"].split(" ", 1)[1], f"FAIL ({g['reason']})"] for g in gs]
    return rows


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("metric", "value", "baseline", "delta", "rule", "result", box=None)
    for row in table_rows(report):
        style = "red" if row[5].startswith("FAIL") else "green" if row[5] == "pass" else None
        table.add_row(*row, style=style)
    console = Console(width=max(Console().width, 110))  # a pipe gets 80 columns, too few for six
    console.print(table)
    if report.get("passed") is not None:
        color = "green" if report["passed"] else "red"
        console.print(f"gates: [{color}]{'passed' if report['passed'] else 'FAILED'}[/{color}]")


def compare_rows(reports: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One column per report (named by its model), one row per metric any of them has; counts left out."""
    names = [(r.get("model") or {}).get("name") or (r.get("model") or {}).get("endpoint") or f"#{i + 1}"
             for i, r in enumerate(reports)]
    keys: list[str] = []
    for r in reports:
        keys += [k for k in r["metrics"] if k not in keys and not k.endswith(COUNT_SUFFIXES)]
    return names, [[k] + [_fmt(r["metrics"].get(k)) for r in reports] for k in keys]


def print_compare(reports: list[dict], markdown: bool = False) -> None:
    names, rows = compare_rows(reports)
    if markdown:
        print("| metric | " + " | ".join(names) + " |")
        print("|---|" + "---:|" * len(names))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("metric", *names, box=None)
    for row in rows:
        table.add_row(*row)
    Console(width=max(Console().width, 110)).print(table)
