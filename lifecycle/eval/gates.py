"""Release gates: rules over metrics, read from YAML; evaluating them is a pure function of metrics.

    rules = load_gates("configs/gates-default.yaml")
    results = evaluate(rules, metrics, baseline_metrics)   # one dict per rule
    ok = all(r["passed"] for r in results)

A gate file holds `gates:`, a list whose items are strings or mappings:

    gates:
      - addition/exact_match >= 0.9                 # absolute floor
      - redteam/harmful_rate <= 0.02                # absolute ceiling
      - addition/exact_match >= 97% of baseline     # relative: keep 97% of the baseline's value
      - arith-ppl/perplexity <= 105% of baseline    # relative: may rise by at most 5%
      - tiny-mc/accuracy >= baseline - 0.02         # relative: may drop by at most 0.02
      - {metric: ifeval/prompt_accuracy, op: ">=", value: 0.5}
      - {metric: arith-ppl/perplexity, op: "<=", ratio: 1.05}

A metric is named by its full key (`task/metric`) or, when exactly one task reports it, by the bare
metric name (`harmful_rate`). A missing metric, or a relative rule without a baseline, fails the gate.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifecycle.errors import UserError

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RULE = re.compile(
    rf"^\s*(?P<metric>[^\s<>=]+)\s*(?P<op>>=|<=|==|>|<)\s*(?:"
    rf"(?P<pct>{_NUM})\s*%\s*of\s+baseline"
    rf"|baseline\s*(?:(?P<sign>[-+])\s*(?P<delta>{_NUM}))?"
    rf"|(?P<value>{_NUM}))\s*$"
)


@dataclass(frozen=True)
class Rule:
    metric: str
    op: str
    kind: str  # "absolute" | "ratio" | "delta"
    amount: float  # the threshold, the baseline multiplier or the baseline offset

    def text(self) -> str:
        if self.kind == "absolute":
            return f"{self.metric} {self.op} {self.amount:g}"
        if self.kind == "ratio":
            return f"{self.metric} {self.op} {self.amount * 100:g}% of baseline"
        sign = "+" if self.amount >= 0 else "-"
        return f"{self.metric} {self.op} baseline {sign} {abs(self.amount):g}"

    @property
    def relative(self) -> bool:
        return self.kind != "absolute"


def parse_rule(item: Any, where: str = "gates") -> Rule:
    """A rule from its string form or a mapping {metric, op, value | ratio | delta}."""
    if isinstance(item, str):
        m = _RULE.match(item)
        if not m:
            raise UserError(f"{where}: cannot read rule {item!r}; write e.g. 'exact_match >= 0.9', "
                            "'exact_match >= 97% of baseline' or 'perplexity <= baseline + 0.5'")
        if m["pct"] is not None:
            return Rule(m["metric"], m["op"], "ratio", float(m["pct"]) / 100)
        if m["value"] is not None:
            return Rule(m["metric"], m["op"], "absolute", float(m["value"]))
        delta = float(m["delta"] or 0) * (-1 if m["sign"] == "-" else 1)
        return Rule(m["metric"], m["op"], "delta", delta)
    if isinstance(item, dict):
        kinds = [k for k in ("value", "ratio", "delta") if k in item]
        unknown = set(item) - {"metric", "op", "value", "ratio", "delta"}
        if "metric" not in item or item.get("op") not in OPS or len(kinds) != 1 or unknown:
            raise UserError(f"{where}: rule {item!r} needs metric, op (one of {' '.join(OPS)}) and exactly "
                            "one of value, ratio, delta")
        kind = {"value": "absolute", "ratio": "ratio", "delta": "delta"}[kinds[0]]
        try:
            amount = float(item[kinds[0]])
        except (TypeError, ValueError):
            raise UserError(f"{where}: rule {item!r}: {kinds[0]} must be a number") from None
        return Rule(str(item["metric"]), item["op"], kind, amount)
    raise UserError(f"{where}: a rule is a string or a mapping, got {item!r}")


def load_gates(path: str | Path) -> list[Rule]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"gate file {p} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"gate file {p} is not valid YAML: {e}") from None
    items = data.get("gates") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise UserError(f"gate file {p} needs a non-empty list under 'gates:'")
    return [parse_rule(item, f"{p} rule {i + 1}") for i, item in enumerate(items)]


def resolve_metric(name: str, metrics: dict) -> str | None:
    """The full metric key for `name`: itself, or the one key ending in '/name'. None when absent."""
    if name in metrics:
        return name
    hits = [k for k in metrics if k.endswith("/" + name)]
    if len(hits) > 1:
        raise UserError(f"gate metric '{name}' is ambiguous ({', '.join(sorted(hits))}); write the full key")
    return hits[0] if hits else None


def evaluate(rules: list[Rule], metrics: dict, baseline: dict | None = None) -> list[dict]:
    """Check each rule against flat metrics; pure: the same inputs always give the same rows."""
    rows = []
    for rule in rules:
        key = resolve_metric(rule.metric, metrics) or resolve_metric(rule.metric, baseline or {}) or rule.metric
        value = metrics.get(key)
        base = (baseline or {}).get(key)
        row = {"rule": rule.text(), "metric": key, "op": rule.op, "kind": rule.kind, "value": value,
               "baseline": base, "threshold": None, "passed": False, "reason": ""}
        if not isinstance(value, (int, float)):
            row["reason"] = "metric missing"
        elif rule.relative and not isinstance(base, (int, float)):
            row["reason"] = "needs a baseline value"
        else:
            if rule.kind == "absolute":
                threshold = rule.amount
            elif rule.kind == "ratio":
                threshold = base * rule.amount
            else:
                threshold = base + rule.amount
            row["threshold"] = threshold
            row["passed"] = bool(OPS[rule.op](value, threshold))
        rows.append(row)
    return rows


def passed(rows: list[dict]) -> bool:
    return all(r["passed"] for r in rows)
