"""The parity report: how far a converted artifact's Engine is from its parent's, on the same inputs.

- `top1_agreement`, `mean_kl`, `max_logprob_diff`: next-token distributions at every position of a fixed
  set of texts (held-out sums, raw and in the chat format), teacher-forced with the parent's token ids;
- `greedy_agreement`: share of greedy completions (raw and chat prompts) identical to the parent's;
- `exact_match`, `raw_exact_match`: `lifecycle.eval.arith` on held-out sums, for the child and the parent;
- `size_bytes`, `ratio_to_parent`, `load_s`, `decode_tok_s` (batch 1, greedy, up to 64 tokens).
"""

from __future__ import annotations

import time

import numpy as np

from lifecycle.data import synth
from lifecycle.engine import Engine, SamplingParams


def next_token_logits(engine: Engine, ids: list[int]) -> np.ndarray:
    """[len(ids), vocab] float32 logits: row i predicts token i+1. Engines may expose `logits(ids)`."""
    if hasattr(engine, "logits"):
        return np.asarray(engine.logits(ids), dtype=np.float32)
    torch = engine.torch  # an HFEngine
    with torch.inference_mode():
        out = engine.model(input_ids=torch.tensor([ids])).logits[0].float()
    return out.numpy()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def parity_texts(tok, n: int, seed: int = 4321) -> tuple[list[str], list[list[dict]], list[list[int]]]:
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


def compare(parent: Engine, child: Engine, tok, prompts: int = 32, eval_items: int = 200,
            parent_metrics: dict | None = None) -> dict:
    """Measure the child against the parent. `parent_metrics` caches the parent's own figures."""
    raw, chats, seqs = parity_texts(tok, prompts)
    top1, kls, maxdiff = [], [], 0.0
    for ids in seqs:
        lp, lc = _log_softmax(next_token_logits(parent, ids)), _log_softmax(next_token_logits(child, ids))
        top1.append(lp.argmax(-1) == lc.argmax(-1))
        kls.append((np.exp(lp) * (lp - lc)).sum(-1))
        maxdiff = max(maxdiff, float(np.abs(lp - lc).max()))
    out = {"top1_agreement": float(np.concatenate(top1).mean()), "mean_kl": float(np.concatenate(kls).mean()),
           "max_logprob_diff": maxdiff, "parity_positions": int(sum(len(s) for s in seqs))}

    greedy_raw = SamplingParams(max_tokens=6, stop=["\n"])
    greedy_chat = SamplingParams(max_tokens=16)
    has_chat = bool(getattr(tok, "chat_template", None))
    chats = chats if has_chat else []
    pa = [c.text for c in parent.generate(raw, greedy_raw) + (parent.generate(chats, greedy_chat) if chats else [])]
    ch = [c.text for c in child.generate(raw, greedy_raw) + (child.generate(chats, greedy_chat) if chats else [])]
    out["greedy_agreement"] = sum(a == b for a, b in zip(pa, ch)) / len(pa)

    if eval_items:
        from lifecycle.eval.arith import chat_eval, raw_eval

        def em(engine):
            chat = chat_eval(engine, n=eval_items)["exact_match"] if has_chat else None
            return {"exact_match": chat, "raw_exact_match": raw_eval(engine, n=eval_items)["raw_exact_match"]}

        mine = em(child)
        out.update(mine)
        parent_metrics = parent_metrics or em(parent)
        out["parent_exact_match"] = parent_metrics["exact_match"]
        out["parent_raw_exact_match"] = parent_metrics["raw_exact_match"]
        out["eval_items"] = eval_items
    out["decode_tok_s"] = decode_speed(child)
    return out


def decode_speed(engine: Engine, tokens: int = 64) -> float:
    """Greedy tokens/s at batch 1 on a raw prompt (the model may stop early at EOS; counted tokens only)."""
    engine.generate(["1+2="], SamplingParams(max_tokens=4))  # warm-up
    t0 = time.perf_counter()
    [c] = engine.generate(["12+34=\n5+6="], SamplingParams(max_tokens=tokens))
    return round(c.completion_tokens / max(time.perf_counter() - t0, 1e-9), 1)
