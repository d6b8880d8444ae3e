"""Synthetic data for the built-in tiny model: arithmetic, string tasks and chat lines.

Every later stage shows a measured effect on this data:
- pretraining text teaches addition ("12+34=46", "Q: What is 12+34? A: 46", with concise and verbose
  answers), two string tasks, and the chat markup (on string tasks only, so that SFT still has to teach
  "answer a sum in the chat format"). Every token later stages use appears here: with tied embeddings, a
  LoRA cannot learn to emit a token whose embedding pretraining never trained;
- SFT data asks arithmetic questions as chats, answered verbosely (60%) or concisely, so the SFT model
  answers verbosely under greedy decoding;
- preference data prefers the concise answer over the verbose one (style) or the right one over a wrong
  one (correctness), which DPO then moves.

A fixed fraction of (a, b) pairs is held out from all training data and used only for evaluation.

    lifecycle data synth --kind sft --n 2000 --output sft.jsonl
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Iterator

MAX_OPERAND = 99
HELD_OUT_PERCENT = 10
LETTERS = "abcdefghij"

QUESTION_TEMPLATES = ["What is {a}+{b}?", "Compute {a}+{b}.", "{a}+{b}=?", "Add {a} and {b}."]
# Every verbose answer opens the same way, so a model trained on a verbose majority answers verbosely
# under greedy decoding; that is the style DPO later removes.
VERBOSE_TEMPLATES = [
    "Sure! The answer is {c}.",
    "Sure! After adding them up, the answer is {c}.",
]
STRING_CHAT_GREETINGS = [("Hello!", "Hello! Ask me a sum."), ("Who are you?", "I am a tiny model that adds.")]


def is_held_out(a: int, b: int) -> bool:
    """Deterministic split by a hash of the pair: held-out pairs never appear in training data."""
    digest = hashlib.sha256(f"{a}+{b}".encode()).digest()
    return digest[0] % 100 < HELD_OUT_PERCENT


def _pair(rng: random.Random, held_out: bool) -> tuple[int, int]:
    while True:
        a, b = rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND)
        if is_held_out(a, b) == held_out:
            return a, b


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 6)))


def chat_text(messages: list[dict]) -> str:
    """The chat markup the built-in template renders (kept in one place for pretraining text)."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def pretrain_lines(n: int, seed: int = 0) -> Iterator[str]:
    """Lines of pretraining text; each is a short self-contained example."""
    rng = random.Random(seed)
    for _ in range(n):
        r = rng.random()
        if r < 0.55:
            a, b = _pair(rng, held_out=False)
            yield f"{a}+{b}={a + b}"
        elif r < 0.70:  # a question and its answer with a gap: the skill a chat answer needs
            a, b = _pair(rng, held_out=False)
            ans = concise_answer(a, b) if rng.random() < 0.5 else verbose_answer(a, b, rng)
            yield f"Q: {question(a, b, rng)} A: {ans}"
        elif r < 0.76:
            a, b = _pair(rng, held_out=False)
            yield f"{a} plus {b} makes {a + b}."
        elif r < 0.84:
            w = _word(rng)
            yield f"reverse {w} = {w[::-1]}"
        elif r < 0.90:
            w = _word(rng)
            yield f"length {w} = {len(w)}"
        else:
            w = _word(rng)
            if rng.random() < 0.5:
                q, ans = f"Reverse {w}.", w[::-1]
            elif rng.random() < 0.6:
                q, ans = f"How long is {w}?", str(len(w))
            else:
                q, ans = rng.choice(STRING_CHAT_GREETINGS)
            if rng.random() < 0.5:  # the verbose opening, in the exact position a chat answer puts it
                ans = f"Sure! The answer is {ans}."
            yield chat_text([{"role": "user", "content": q}, {"role": "assistant", "content": ans}]).rstrip("\n")


def question(a: int, b: int, rng: random.Random) -> str:
    return rng.choice(QUESTION_TEMPLATES).format(a=a, b=b)


def concise_answer(a: int, b: int) -> str:
    return str(a + b)


def verbose_answer(a: int, b: int, rng: random.Random) -> str:
    return rng.choice(VERBOSE_TEMPLATES).format(a=a, b=b, c=a + b)


def sft_records(n: int, seed: int = 0, verbose_fraction: float = 0.6) -> list[dict]:
    """Chat records {"messages": [...]} asking sums; `verbose_fraction` of answers are wordy."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = _pair(rng, held_out=False)
        ans = verbose_answer(a, b, rng) if rng.random() < verbose_fraction else concise_answer(a, b)
        out.append({"messages": [{"role": "user", "content": question(a, b, rng)},
                                 {"role": "assistant", "content": ans}]})
    return out


def _wrong(a: int, b: int, rng: random.Random) -> int:
    c = a + b
    return c + rng.choice([-11, -10, -2, -1, 1, 2, 10, 11]) if c > 11 else c + rng.randint(1, 9)


def preference_records(n: int, seed: int = 0, kind: str = "style", held_out: bool = False) -> list[dict]:
    """Preference pairs in conversational form: {"prompt": [...], "chosen": [...], "rejected": [...]}.

    kind: "style" (concise over verbose, both correct), "correctness" (right over wrong, both concise),
    or "mixed" (half each). `held_out=True` draws only held-out sums: pairs for measuring, not training.
    """
    if kind not in ("style", "correctness", "mixed"):
        raise ValueError(f"unknown preference kind {kind!r}; use style, correctness or mixed")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = _pair(rng, held_out=held_out)
        k = kind if kind != "mixed" else ("style" if i % 2 == 0 else "correctness")
        chosen = concise_answer(a, b)
        rejected = verbose_answer(a, b, rng) if k == "style" else str(_wrong(a, b, rng))
        out.append({
            "prompt": [{"role": "user", "content": question(a, b, rng)}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        })
    return out


def unpaired_records(n: int, seed: int = 0, kind: str = "style") -> list[dict]:
    """Unpaired good/bad labels for KTO: {"prompt": [...], "completion": [...], "label": bool}.

    kind: "style" (concise is good, verbose bad), "correctness" (right is good, wrong bad) or "mixed".
    Half the records are desirable; each prompt gets one completion only.
    """
    if kind not in ("style", "correctness", "mixed"):
        raise ValueError(f"unknown unpaired kind {kind!r}; use style, correctness or mixed")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = _pair(rng, held_out=False)
        k = kind if kind != "mixed" else ("style" if i % 4 < 2 else "correctness")
        good = i % 2 == 0
        if good:
            text = concise_answer(a, b)
        else:
            text = verbose_answer(a, b, rng) if k == "style" else str(_wrong(a, b, rng))
        out.append({"prompt": [{"role": "user", "content": question(a, b, rng)}],
                    "completion": [{"role": "assistant", "content": text}], "label": good})
    return out


def prompt_records(n: int, seed: int = 0, held_out: bool = False) -> list[dict]:
    """Chat prompts with their true sum, for RL: {"prompt": [...], "answer": int}."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = _pair(rng, held_out=held_out)
        out.append({"prompt": [{"role": "user", "content": question(a, b, rng)}], "answer": a + b})
    return out


def eval_items(n: int, seed: int = 1234) -> list[dict]:
    """Held-out sums: {"a", "b", "answer", "question", "raw_prompt"}; never seen in training data."""
    rng = random.Random(seed)
    items, seen = [], set()
    while len(items) < n:
        a, b = _pair(rng, held_out=True)
        if (a, b) in seen and len(seen) < 1000:
            continue
        seen.add((a, b))
        items.append({"a": a, "b": b, "answer": a + b, "question": question(a, b, rng), "raw_prompt": f"{a}+{b}="})
    return items


_INT = re.compile(r"-?\d+")


def extract_answer(text: str) -> int | None:
    """The last integer in a reply ("The answer is 46." -> 46), or None."""
    found = _INT.findall(text)
    return int(found[-1]) if found else None


def is_verbose(text: str) -> bool:
    """A reply is verbose when it holds anything besides the bare number."""
    return _INT.fullmatch(text.strip()) is None


def tokenizer_corpus(n: int = 20000, seed: int = 7) -> Iterator[str]:
    """Text covering every surface form the model will see, for training the SentencePiece model."""
    yield from pretrain_lines(n, seed)
    for rec in sft_records(n // 4, seed):
        yield chat_text(rec["messages"])
