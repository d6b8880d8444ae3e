"""Instruction following in the style of IFEval: verifiable constraints on the reply, checked by code.

Items are {"prompt", "checks": [...]}; a check is a name (`number_only`) or a one-key mapping
(`{max_words: 3}`). Checks: number_only, max_words N, min_words N, max_chars N, starts_with TEXT,
ends_with TEXT, contains TEXT, not_contains TEXT, lowercase, uppercase, one_line, json, regex PATTERN.
Metrics: `prompt_accuracy` (every check of an item passes) and `instruction_accuracy` (share of checks).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from lifecycle.engine import Engine
from lifecycle.errors import UserError
from lifecycle.eval.generation import params_for
from lifecycle.eval.tasks import Task


def _words(text: str) -> int:
    return len(re.findall(r"\S+", text))


def _is_json(text: str) -> bool:
    try:
        json.loads(text.strip())
        return True
    except ValueError:
        return False


def _letters(text: str) -> str:
    return "".join(c for c in text if c.isalpha())


# name -> (needs an argument, check(reply, arg))
CHECKS: dict[str, tuple[bool, Callable[[str, Any], bool]]] = {
    "number_only": (False, lambda r, _: re.fullmatch(r"\s*-?\d+(\.\d+)?\s*", r) is not None),
    "max_words": (True, lambda r, n: _words(r) <= int(n)),
    "min_words": (True, lambda r, n: _words(r) >= int(n)),
    "max_chars": (True, lambda r, n: len(r.strip()) <= int(n)),
    "starts_with": (True, lambda r, s: r.strip().startswith(str(s))),
    "ends_with": (True, lambda r, s: r.strip().endswith(str(s))),
    "contains": (True, lambda r, s: str(s).lower() in r.lower()),
    "not_contains": (True, lambda r, s: str(s).lower() not in r.lower()),
    "lowercase": (False, lambda r, _: _letters(r) == _letters(r).lower()),
    "uppercase": (False, lambda r, _: _letters(r) == _letters(r).upper()),
    "one_line": (False, lambda r, _: "\n" not in r.strip()),
    "json": (False, lambda r, _: _is_json(r)),
    "regex": (True, lambda r, p: re.search(str(p), r) is not None),
}


def parse_check(spec: Any, where: str) -> tuple[str, Any]:
    if isinstance(spec, str):
        name, arg = spec, None
    elif isinstance(spec, dict) and len(spec) == 1:
        (name, arg), = spec.items()
    else:
        raise UserError(f"{where}: a check is a name or a one-key mapping, got {spec!r}")
    if name not in CHECKS:
        raise UserError(f"{where}: unknown check {name!r}; known: {', '.join(CHECKS)}")
    if CHECKS[name][0] and arg is None:
        raise UserError(f"{where}: check {name!r} needs a value, e.g. {{{name}: ...}}")
    return name, arg


def check(reply: str, spec: Any, where: str = "check") -> bool:
    name, arg = parse_check(spec, where)
    return bool(CHECKS[name][1](reply, arg))


def score_replies(items: list[dict], replies: list[str], where: str = "task") -> dict:
    per_item, total, passed = [], 0, 0
    for i, (it, reply) in enumerate(zip(items, replies), 1):
        results = [check(reply, c, f"{where} item {i}") for c in it["checks"]]
        per_item.append(all(results))
        total += len(results)
        passed += sum(results)
    return {"prompt_accuracy": sum(per_item) / max(len(per_item), 1),
            "instruction_accuracy": passed / max(total, 1), "n": len(items), "checks": total}


def run(task: Task, engine: Engine, ctx) -> dict:
    items = task.items()
    for i, it in enumerate(items, 1):
        if not isinstance(it.get("checks"), list) or not it["checks"]:
            raise UserError(f"task '{task.name}' item {i}: needs a non-empty 'checks' list")
        for c in it["checks"]:
            parse_check(c, f"task '{task.name}' item {i}")
    replies = [o.text for o in engine.generate([task.prompt(it) for it in items], params_for(task, 32))]
    result = score_replies(items, replies, f"task '{task.name}'")
    samples = [{"prompt": it["prompt"], "reply": r, "checks": it["checks"]} for it, r in zip(items[:5], replies[:5])]
    return {"metrics": result, "samples": samples}
