"""The parity report: how far a converted artifact's Engine is from its parent's, on the same inputs.

The inputs (`QuantOptions.parity_texts`) are a probe set (`lifecycle.probes`): `auto` picks `arith` for a
model descending from the built-in arithmetic demo (`lifecycle.models.task_profile`) and `generic` for any
other; `arith`, `generic` or a JSONL path of {"text"} / {"prompt"} / {"messages"} lines force a set. This
module names no task: what a set holds lives with the set.

- `top1_agreement`, `mean_kl`, `max_logprob_diff`: next-token distributions at every position of the
  set's texts, teacher-forced with the parent's token ids. arith: held-out sums with their answers, raw
  and in the chat format. generic: held-out texts and chats of `lifecycle.data.generic` (or the file's),
  each cut to its first 128 tokens so a 150k-entry vocabulary stays a few hundred MB;
- `greedy_agreement`: share of greedy completions (raw and chat prompts) identical to the parent's;
  generic raw prompts are each text's first 32 tokens;
- a set with known answers (arith): `exact_match`, `raw_exact_match` (held-out sums) for the child and the
  parent;
- a set without (generic, a file): `nll_per_token`, `parent_nll_per_token`, `nll_delta` (child - parent): mean
  negative log-likelihood of the next token on the teacher-forced texts, a perplexity-style figure that
  needs no known answer;
- `parity_set`, `size_bytes`, `ratio_to_parent`, `load_s`, `decode_tok_s` (batch 1, greedy, up to 64 tokens).
"""

from __future__ import annotations

import time

import numpy as np

from lifecycle.engine import Engine, SamplingParams
from lifecycle.probes import probe_set, resolve_probes

GREEDY_TOKENS = 16
ROWS_PER_CHUNK = 16  # float64 log-softmax over this many rows at a time


def next_token_logits(engine: Engine, ids: list[int]) -> np.ndarray:
    """[len(ids), vocab] float32 logits: row i predicts token i+1. Engines may expose `logits(ids)`."""
    if engine.has_logits:
        return np.asarray(engine.logits(ids), dtype=np.float32)
    torch = engine.torch  # an HFEngine
    with torch.inference_mode():
        out = engine.model(input_ids=torch.tensor([ids])).logits[0].float()
    return out.numpy()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _teacher_forced(parent: Engine, child: Engine, seqs: list[list[int]]) -> dict:
    """Top-1 agreement, KL(parent || child), max |log-prob diff| and both NLLs over every position."""
    top1, kls, maxdiff, nll_p, nll_c, scored = [], [], 0.0, 0.0, 0.0, 0
    for ids in seqs:
        p_logits, c_logits = next_token_logits(parent, ids), next_token_logits(child, ids)
        nxt = np.asarray(ids[1:])
        for s in range(0, len(ids), ROWS_PER_CHUNK):
            lp, lc = _log_softmax(p_logits[s:s + ROWS_PER_CHUNK]), _log_softmax(c_logits[s:s + ROWS_PER_CHUNK])
            top1.append(lp.argmax(-1) == lc.argmax(-1))
            kls.append((np.exp(lp) * (lp - lc)).sum(-1))
            maxdiff = max(maxdiff, float(np.abs(lp - lc).max()))
            rows = np.arange(min(len(lp), len(nxt) - s))  # the last position has no next token
            nll_p -= float(lp[rows, nxt[s + rows]].sum())
            nll_c -= float(lc[rows, nxt[s + rows]].sum())
            scored += len(rows)
    return {"top1_agreement": float(np.concatenate(top1).mean()), "mean_kl": float(np.concatenate(kls).mean()),
            "max_logprob_diff": maxdiff, "parity_positions": int(sum(len(s) for s in seqs)),
            "nll": (nll_c / max(scored, 1), nll_p / max(scored, 1))}


def compare(parent: Engine, child: Engine, tok, prompts: int = 32, eval_items: int = 200,
            parent_metrics: dict | None = None, texts: str = "auto") -> dict:
    """Measure the child against the parent. `parent_metrics` caches the parent's own exact-match figures;
    `texts` picks the input set (see the module docstring); 'auto' reads the parent engine's artifact."""
    chosen = resolve_probes(texts, getattr(parent, "artifact", None))
    probes = probe_set(chosen)
    has_chat = bool(getattr(tok, "chat_template", None))
    raw, chats, seqs = probes.parity(tok, prompts, context=parent.context_length)
    greedy_raw = probes.greedy_params()
    out = _teacher_forced(parent, child, seqs)
    nll_child, nll_parent = out.pop("nll")
    out["parity_set"] = chosen

    greedy_chat = SamplingParams(max_tokens=GREEDY_TOKENS)
    chats = chats if has_chat else []
    pa = [c.text for c in parent.generate(raw, greedy_raw) + (parent.generate(chats, greedy_chat) if chats else [])]
    ch = [c.text for c in child.generate(raw, greedy_raw) + (child.generate(chats, greedy_chat) if chats else [])]
    out["greedy_agreement"] = sum(a == b for a, b in zip(pa, ch)) / max(len(pa), 1)

    mine = probes.exact_match(child, eval_items) if eval_items else None
    if mine is None:  # no known answers: how much likelier the parent finds the same texts
        out.update(nll_per_token=round(nll_child, 6), parent_nll_per_token=round(nll_parent, 6),
                   nll_delta=round(nll_child - nll_parent, 6), greedy_prompts=len(pa))
    else:
        out.update(mine)
        parent_metrics = parent_metrics or probes.exact_match(parent, eval_items)
        out["parent_exact_match"] = parent_metrics["exact_match"]
        out["parent_raw_exact_match"] = parent_metrics["raw_exact_match"]
        out["eval_items"] = eval_items
    out["decode_tok_s"] = decode_speed(child, raw[0] if chosen != "arith" and raw else None)
    return out


def decode_speed(engine: Engine, prompt: str | None = None, tokens: int = 64) -> float:
    """Greedy tokens/s at batch 1 on a raw prompt (the model may stop early at EOS; counted tokens only).
    The default prompt is sums (the arithmetic demo); other models pass one of their parity prompts."""
    engine.generate([prompt[:8] if prompt else "1+2="], SamplingParams(max_tokens=4))  # warm-up
    t0 = time.perf_counter()
    [c] = engine.generate([prompt or "12+34=\n5+6="], SamplingParams(max_tokens=tokens))
    return round(c.completion_tokens / max(time.perf_counter() - t0, 1e-9), 1)
