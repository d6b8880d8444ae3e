"""The seeded prompt set: built-in sums or built-in generic chats with controlled lengths, or a user's JSONL.

    prompt_set(n=32, input_len=24, output_len=16, seed=0)                  # sums (the arithmetic demo)
    prompt_set(n=32, input_len=24, output_len=16, seed=0, kind="generic")  # chats, any other model
    prompt_set(n=32, path="prompts.jsonl", output_len=16, seed=0)          # {"prompt": ...} or {"messages": [...]}

`input_len` is a length in characters of the text the model reads, for both built-in sets:
- arith: raw completion text, lines of `a+b=c` ending in an open `a+b=`, exactly `input_len` characters
  (about one token per character with the built-in tokenizer, which splits digits);
- generic: chat requests from `lifecycle.data.generic` (English, Chinese, European languages; some with a
  system message). A user message more than MIN_CONTEXT + 2 characters shorter than `input_len` is preceded
  by generic paragraphs, cut so the message is exactly `input_len` characters; the others are sent as
  written. So the default 24 keeps the prompts as they are (10-130 characters); raise it (e.g. 2000) to
  test long inputs. Tokens per character depend on the tokenizer: about 4 characters a token for English and
  1-1.5 for Chinese on Qwen/Llama-3 vocabularies.
The same seed always gives the same prompts. Each item carries `max_tokens` (= output_len unless a JSONL
line sets its own); the server has no ignore_eos, so a model that stops early returns fewer tokens, and
the report counts the tokens actually returned.
"""

from __future__ import annotations

import random
from pathlib import Path

from lifecycle.errors import UserError
from lifecycle.readers import read_jsonl as read_lines_jsonl


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


MIN_CONTEXT = 16  # generic: a message this much shorter than input_len (or less) is sent as written


def generic_prompts(n: int, input_len: int, output_len: int, seed: int) -> list[dict]:
    """n chat items from the generic set; user messages padded with generic paragraphs up to input_len."""
    from lifecycle.data.generic import generic_chats, generic_texts

    items = []
    for i, chat in enumerate(generic_chats(n, seed)):
        user = chat[-1]["content"]
        room = input_len - len(user) - 2
        if room >= MIN_CONTEXT:  # generic paragraphs, cut, then a blank line and the request itself
            k = 1 + room // 100
            while len(context := "\n\n".join(generic_texts(k, seed * 100003 + i))) < room:
                k *= 2
            user = context[:room] + "\n\n" + user
        items.append({"messages": chat[:-1] + [{"role": "user", "content": user}], "max_tokens": output_len})
    return items


def read_jsonl(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"prompt file {p} not found; pass a JSONL of {{\"prompt\": ...}} or {{\"messages\": [...]}}")
    items = []
    for i, d, error in read_lines_jsonl(p):
        if error is not None:
            raise UserError(f"{p}:{i}: {error}")
        if not isinstance(d, dict) or not (isinstance(d.get("prompt"), str) or isinstance(d.get("messages"), list)):
            raise UserError(f"{p}:{i} needs a 'prompt' string or a 'messages' list")
        items.append({k: d[k] for k in ("prompt", "messages", "max_tokens") if k in d})
    if not items:
        raise UserError(f"prompt file {p} has no prompts")
    return items


def choose_kind(choice: str = "auto", target=None) -> str:
    """The built-in set for a model: `choice` arith | generic as given; 'auto' follows
    `lifecycle.models.task_profile` of `target` (an Artifact, or a served model name that resolves to a
    local artifact); a model that cannot be looked up gets 'generic'."""
    if choice in ("arith", "generic"):
        return choice
    if choice != "auto":
        raise UserError(f"prompt set must be auto, arith or generic, got {choice!r}")
    if target is None:
        return "generic"
    from lifecycle.models import resolve, task_profile

    if isinstance(target, str):
        try:
            target = resolve(target, verify=False)
        except UserError:
            return "generic"
    return task_profile(target)


def prompt_set(n: int, input_len: int = 24, output_len: int = 16, seed: int = 0,
               path: str | Path | None = None, kind: str = "arith") -> list[dict]:
    """n prompts, each {"prompt" | "messages", "max_tokens"}; `kind` (arith | generic) picks the built-in
    set when no `path` is given; a file is sampled (seeded) with replacement only when it has fewer than n lines."""
    if n < 1 or output_len < 1 or input_len < 6:
        raise UserError("need num_prompts >= 1, output_len >= 1 and input_len >= 6")
    if kind not in ("arith", "generic"):
        raise UserError(f"prompt set must be arith or generic, got {kind!r}")
    if path is None:
        if kind == "generic":
            return generic_prompts(n, input_len, output_len, seed)
        return builtin_prompts(n, input_len, output_len, seed)
    items = read_jsonl(path)
    rng = random.Random(seed)
    picked = rng.sample(items, n) if len(items) >= n else [rng.choice(items) for _ in range(n)]
    return [{"max_tokens": output_len, **d} for d in picked]
