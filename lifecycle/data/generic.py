"""The built-in generic text set: what probes, calibration, benchmarks and smoke tests use for a model that
is not the arithmetic demo (`lifecycle.models.task_profile(...) == "generic"`).

    from lifecycle.data.generic import generic_chats, generic_texts
    texts = generic_texts(16, seed=0, split="held")     # paragraph-length raw texts
    chats = generic_chats(16, seed=0)                   # single-turn chats, some with a system message

Two JSONL files beside this module, written for this project: `generic_texts.jsonl` ({"lang", "kind",
"text"}: encyclopedia-style facts, how-tos, dialogue, code, numbers) and `generic_chats.jsonl` ({"lang",
"messages"}), in English, simplified Chinese, French, German and Spanish, a few with emoji. Every fourth
item (index 0, 4, 8, ...) is held out: parity reports read `split="held"`, GPTQ calibration reads
`split="calibration"`, so a quantizer never calibrates on the texts it is judged on.

Sampling is deterministic for a seed: the pool is shuffled with `random.Random(seed)` and, when more items
are asked for than the pool holds, reshuffled pass after pass. Only the standard library is imported here,
so the Locust file can use it too.
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

HERE = Path(__file__).parent
TEXTS_FILE = HERE / "generic_texts.jsonl"
CHATS_FILE = HERE / "generic_chats.jsonl"
HELD_EVERY = 4
SPLITS = (None, "held", "calibration")


@functools.lru_cache(maxsize=None)
def _rows(path: Path) -> tuple[dict, ...]:
    with open(path, encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def records(kind: str = "texts", split: str | None = None) -> list[dict]:
    """The rows of one file ("texts" or "chats") in file order, optionally one split of them."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rows = _rows(TEXTS_FILE if kind == "texts" else CHATS_FILE)
    if split is None:
        return [dict(r) for r in rows]
    held = split == "held"
    return [dict(r) for i, r in enumerate(rows) if (i % HELD_EVERY == 0) == held]


def sample(pool: list, n: int, seed: int) -> list:
    """n items from pool, seeded: one shuffled pass, then more shuffled passes if n exceeds the pool."""
    if not pool or n <= 0:
        return []
    rng, out = random.Random(seed), []
    while len(out) < n:
        order = list(pool)
        rng.shuffle(order)
        out += order
    return out[:n]


def generic_texts(n: int, seed: int = 0, split: str | None = None) -> list[str]:
    """n raw texts (paragraphs, dialogue, code) from the built-in set."""
    return [r["text"] for r in sample(records("texts", split), n, seed)]


def generic_chats(n: int, seed: int = 0, split: str | None = None) -> list[list[dict]]:
    """n chats: each a list of {"role", "content"} ending in one user message (some start with a system one)."""
    return [[dict(m) for m in r["messages"]] for r in sample(records("chats", split), n, seed)]


def read_prompt_file(path: str | Path) -> tuple[list[str], list[list[dict]]]:
    """A user's JSONL of {"text"} / {"prompt"} / {"messages"} lines -> (raw texts, chats); a bad line is an error."""
    from lifecycle.errors import UserError

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"text file {p} not found; give a JSONL of {{\"text\"}}, {{\"prompt\"}} or {{\"messages\"}} lines")
    texts, chats = [], []
    from lifecycle.readers import read_jsonl

    for i, row, error in read_jsonl(p):
        if error is not None:
            raise UserError(f"{p}:{i}: {error}")
        if isinstance(row, dict) and isinstance(row.get("messages"), list) and row["messages"]:
            chats.append(row["messages"])
        elif isinstance(row, dict) and isinstance(row.get("text", row.get("prompt")), str):
            texts.append(row.get("text", row.get("prompt")))
        else:
            raise UserError(f"{p}:{i} needs a 'text' or 'prompt' string or a 'messages' list")
    if not texts and not chats:
        raise UserError(f"text file {p} holds no lines")
    return texts, chats


def fold_system(chat: list[dict]) -> list[dict]:
    """A leading system turn merged into the first user turn, for templates that refuse a system role."""
    if len(chat) < 2 or chat[0].get("role") != "system":
        return chat
    first = dict(chat[1], content=f"{chat[0]['content']}\n\n{chat[1]['content']}")
    return [first] + [dict(m) for m in chat[2:]]


def fit_chat(tok, chat: list[dict]) -> list[dict]:
    """The chat itself, or `fold_system(chat)` when the tokenizer's template raises on a system turn
    (Gemma's, Mistral's older ones)."""
    from jinja2.exceptions import TemplateError

    try:
        tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        return chat
    except TemplateError:
        if chat and chat[0].get("role") == "system":
            return fold_system(chat)
        raise


def cut(text: str, chars: int) -> str:
    """At most `chars` characters of text, ending at a space when one is near (whole words in spaced scripts)."""
    if len(text) <= chars:
        return text
    head = text[:chars]
    space = head.rfind(" ")
    return head[:space] if space > chars // 2 else head


class GenericProbes:
    """The probe set of any model but the built-in demo (`lifecycle.probes`): the held-out split of the
    generic texts and chats for parity, the other split for calibration, or a user's JSONL (`source`)."""

    name = "generic"
    TOKENS_PER_TEXT = 128  # teacher-forced positions per text: bounds the [positions, vocab] logits arrays
    PROMPT_TOKENS = 32  # raw greedy prompts: the first tokens of each text
    GREEDY_TOKENS = 16

    def __init__(self, source: str = "generic"):
        self.source = source

    def greedy_params(self):
        from lifecycle.engine import SamplingParams

        return SamplingParams(max_tokens=self.GREEDY_TOKENS)

    def parity(self, tok, n: int, context: int = 0) -> tuple[list[str], list[list[dict]], list[list[int]]]:
        """Raw prompts (each text's first tokens), chat prompts, and teacher-forced token ids. A chat whose
        last turn is the assistant's is scored whole and prompted without that turn. Chats go only to a
        tokenizer with a chat template; greedy chat prompts that would not fit `context` are left out."""
        from lifecycle.errors import UserError

        if self.source == "generic":  # at most one pass over the held-out split: no repeated inputs
            texts = generic_texts(min(n, len(records("texts", "held"))), 4321, split="held")
            chats = generic_chats(min(n, len(records("chats", "held"))), 4321, split="held")
        else:
            texts, chats = read_prompt_file(self.source)
            texts, chats = texts[:n], chats[:n]
        cap = min(self.TOKENS_PER_TEXT, context) if context else self.TOKENS_PER_TEXT
        seqs = [ids[:cap] for ids in (tok(t, add_special_tokens=True).input_ids for t in texts)]
        raw = [_token_prefix(tok, t, self.PROMPT_TOKENS) for t in texts]
        prompts: list[list[dict]] = []
        if getattr(tok, "chat_template", None):
            for chat in chats:
                chat = fit_chat(tok, chat)
                ask = chat[:-1] if chat[-1].get("role") == "assistant" else chat
                whole = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=ask is chat)
                seqs.append(tok(whole, add_special_tokens=False).input_ids[:cap])
                rendered = tok.apply_chat_template(ask, tokenize=False, add_generation_prompt=True)
                fits = not context or len(tok(rendered, add_special_tokens=False).input_ids) + self.GREEDY_TOKENS <= context
                if ask and fits:
                    prompts.append(ask)
        seqs = [s for s in seqs if len(s) >= 2]
        if not seqs:
            raise UserError(f"parity set {self.source!r} gives no text to compare (a chats-only file needs a chat "
                            "template)")
        return raw, prompts, seqs

    def calibration(self, tok, n: int) -> list[str]:
        """Half chats rendered through the template (when there is one), half raw texts, interleaved; from the
        calibration split, so a quantizer is never judged on what it calibrated on."""
        half = n // 2
        chats = generic_chats(half, seed=0, split="calibration") if getattr(tok, "chat_template", None) else []
        raw = generic_texts(n - len(chats), seed=0, split="calibration")
        rendered = [tok.apply_chat_template(fit_chat(tok, c), tokenize=False, add_generation_prompt=True) for c in chats]
        return [t for pair in zip(rendered, raw) for t in pair] + raw[len(rendered):]

    def exact_match(self, engine, n: int) -> None:
        return None  # no known answers: parity reports the NLL difference instead


def _token_prefix(tok, text: str, tokens: int) -> str:
    """The text's first `tokens` tokens as a string, ending on a whole character (and word, where spaced)."""
    ids = tok(text, add_special_tokens=False).input_ids
    if len(ids) <= tokens:
        return text
    head = tok.decode(ids[:tokens], skip_special_tokens=True).rstrip("\ufffd")
    space = head.rfind(" ")
    return head[:space] if space > len(head) // 2 else head
