"""The seeded prompt set: built-in sums with controlled lengths, or a user's JSONL.

    prompt_set(n=32, input_len=24, output_len=16, seed=0)          # built-in
    prompt_set(n=32, path="prompts.jsonl", output_len=16, seed=0)  # {"prompt": ...} or {"messages": [...]}

Built-in prompts are raw completion text: lines of `a+b=c` ending in an open `a+b=`, exactly `input_len`
characters (about one token per character with the built-in tokenizer, which splits digits). The same
seed always gives the same prompts. Each item carries `max_tokens` (= output_len unless a JSONL line
sets its own); the server has no ignore_eos, so a model that stops early returns fewer tokens, and
the report counts the tokens actually returned.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from lifecycle.errors import UserError


def _sum_text(rng: random.Random, input_len: int) -> str:
    """Exactly input_len characters: solved sums (the first may be cut) and an open `a+b=` at the end."""
    a, b = rng.randrange(100), rng.randrange(100)
    tail = f"{a}+{b}="
    lines: list[str] = []
    while sum(len(x) + 1 for x in lines) < input_len:
        a, b = rng.randrange(100), rng.randrange(100)
        lines.append(f"{a}+{b}={a + b}")
    need = input_len - len(tail)
    return (("\n".join(lines) + "\n")[-need:] if need > 0 else "") + tail


def builtin_prompts(n: int, input_len: int, output_len: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": _sum_text(rng, input_len), "max_tokens": output_len} for _ in range(n)]


def read_jsonl(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"prompt file {p} not found; pass a JSONL of {{\"prompt\": ...}} or {{\"messages\": [...]}}")
    items = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{p}:{i} is not valid JSON") from None
        if not isinstance(d, dict) or not (isinstance(d.get("prompt"), str) or isinstance(d.get("messages"), list)):
            raise UserError(f"{p}:{i} needs a 'prompt' string or a 'messages' list")
        items.append({k: d[k] for k in ("prompt", "messages", "max_tokens") if k in d})
    if not items:
        raise UserError(f"prompt file {p} has no prompts")
    return items


def prompt_set(n: int, input_len: int = 24, output_len: int = 16, seed: int = 0,
               path: str | Path | None = None) -> list[dict]:
    """n prompts, each {"prompt" | "messages", "max_tokens"}; a file is sampled (seeded) with replacement
    only when it has fewer than n lines."""
    if n < 1 or output_len < 1 or input_len < 6:
        raise UserError("need num_prompts >= 1, output_len >= 1 and input_len >= 6")
    if path is None:
        return builtin_prompts(n, input_len, output_len, seed)
    items = read_jsonl(path)
    rng = random.Random(seed)
    picked = rng.sample(items, n) if len(items) >= n else [rng.choice(items) for _ in range(n)]
    return [{"max_tokens": output_len, **d} for d in picked]
