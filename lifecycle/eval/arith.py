"""Held-out arithmetic checks for the built-in task, run through any Engine.

- `exact_match`: the last integer in the reply equals the true sum (so "The answer is 46." counts);
- `verbose_rate`: the share of replies holding anything besides the bare number;
- `raw_exact_match`: greedy completion of "a+b=" with no chat markup (what pretraining teaches).
All items are sums held out from every training set (`lifecycle.data.synth.is_held_out`).
"""

from __future__ import annotations

from lifecycle.data import synth
from lifecycle.engine import Engine, SamplingParams


def chat_eval(engine: Engine, n: int = 200, max_tokens: int = 24, seed: int = 1234) -> dict:
    items = synth.eval_items(n, seed)
    chats = [[{"role": "user", "content": it["question"]}] for it in items]
    outs = engine.generate(chats, SamplingParams(max_tokens=max_tokens, temperature=0.0))
    correct = sum(synth.extract_answer(o.text) == it["answer"] for o, it in zip(outs, items))
    verbose = sum(synth.is_verbose(o.text) for o in outs)
    samples = [{"question": it["question"], "reply": o.text} for it, o in zip(items[:5], outs[:5])]
    return {"exact_match": correct / n, "verbose_rate": verbose / n, "n": n, "samples": samples}


def raw_eval(engine: Engine, n: int = 200, seed: int = 1234) -> dict:
    items = synth.eval_items(n, seed)
    outs = engine.generate([it["raw_prompt"] for it in items], SamplingParams(max_tokens=5, stop=["\n"]))
    correct = sum(o.text.strip() == str(it["answer"]) for o, it in zip(outs, items))
    return {"raw_exact_match": correct / n, "n": n}


class ArithProbes:
    """The probe set of the built-in arithmetic demo (`lifecycle.probes`): held-out sums with their answers
    for parity and exact match, sums never held out for calibration."""

    name = "arith"

    def greedy_params(self):
        return SamplingParams(max_tokens=6, stop=["\n"])

    def parity(self, tok, n: int, context: int = 0, seed: int = 4321):
        """Raw prompts, chat prompts, and full token-id sequences (prompt + answer) for logits comparison."""
        items = synth.eval_items(n, seed)
        raw = [it["raw_prompt"] for it in items]
        chats = [[{"role": "user", "content": it["question"]}] for it in items]
        seqs = [tok(it["raw_prompt"] + str(it["answer"]), add_special_tokens=True).input_ids for it in items]
        if getattr(tok, "chat_template", None):
            for chat, it in zip(chats, items):
                text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + str(it["answer"])
                seqs.append(tok(text, add_special_tokens=False).input_ids)
        return raw, chats, seqs

    def calibration(self, tok, n: int) -> list[str]:
        """Solved sums, raw and in the chat format, none of them held out for evaluation."""
        import random

        rng = random.Random(0)
        texts: list[str] = []
        while len(texts) < n:
            a, b = rng.randrange(100), rng.randrange(100)
            if synth.is_held_out(a, b):
                continue  # calibration never sees the evaluation sums
            chat = [{"role": "user", "content": synth.question(a, b, rng)}, {"role": "assistant", "content": str(a + b)}]
            texts.append(f"{a}+{b}={a + b}\n" if len(texts) % 2 else tok.apply_chat_template(chat, tokenize=False))
        return texts

    def exact_match(self, engine: Engine, n: int) -> dict:
        has_chat = bool(getattr(engine.tok, "chat_template", None))
        chat = chat_eval(engine, n=n)["exact_match"] if has_chat else None
        return {"exact_match": chat, "raw_exact_match": raw_eval(engine, n=n)["raw_exact_match"]}
