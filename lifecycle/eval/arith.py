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
