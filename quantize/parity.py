"""The parity report: how far a converted artifact's Engine is from its parent's, on the same inputs.

The inputs (`QuantOptions.parity_texts`): `auto` picks `arith` for a model descending from the built-in
arithmetic demo (`lifecycle.models.task_profile`) and `generic` for any other; `arith`, `generic` or a
JSONL path of {"text"} / {"prompt"} / {"messages"} lines force a set.

- `top1_agreement`, `mean_kl`, `max_logprob_diff`: next-token distributions at every position of the
  set's texts, teacher-forced with the parent's token ids. arith: held-out sums with their answers, raw
  and in the chat format. generic: held-out texts and chats of `lifecycle.data.generic` (or the file's),
  each cut to its first `TOKENS_PER_TEXT` tokens so a 150k-entry vocabulary stays a few hundred MB;
- `greedy_agreement`: share of greedy completions (raw and chat prompts) identical to the parent's;
  generic raw prompts are each text's first `PROMPT_TOKENS` tokens;
- arith only: `exact_match`, `raw_exact_match` (`lifecycle.eval.arith` on held-out sums) for the child
  and the parent;
- every set but arith: `nll_per_token`, `parent_nll_per_token`, `nll_delta` (child - parent): mean
  negative log-likelihood of the next token on the teacher-forced texts, a perplexity-style figure that
  needs no known answer;
- `parity_set`, `size_bytes`, `ratio_to_parent`, `load_s`, `decode_tok_s` (batch 1, greedy, up to 64 tokens).
"""

from __future__ import annotations

import time

import numpy as np

from lifecycle.data import synth
from lifecycle.engine import Engine, SamplingParams
from lifecycle.errors import UserError

PARITY_SETS = ("auto", "arith", "generic")
TOKENS_PER_TEXT = 128  # teacher-forced positions per text: bounds the [positions, vocab] logits arrays
PROMPT_TOKENS = 32  # generic raw greedy prompts: the first tokens of each text
GREEDY_TOKENS = 16
ROWS_PER_CHUNK = 16  # float64 log-softmax over this many rows at a time


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


def resolve_set(choice: str, artifact=None) -> str:
    """'auto' -> 'arith' for the built-in arithmetic lineage, else 'generic'; other values pass through."""
    if choice != "auto":
        return choice
    if artifact is None:
        return "generic"
    from lifecycle.models import task_profile

    return task_profile(artifact)


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


def _prefix(tok, text: str, tokens: int) -> str:
    """The text's first `tokens` tokens as a string, ending on a whole character (and word, where spaced)."""
    ids = tok(text, add_special_tokens=False).input_ids
    if len(ids) <= tokens:
        return text
    head = tok.decode(ids[:tokens], skip_special_tokens=True).rstrip("\ufffd")
    space = head.rfind(" ")
    return head[:space] if space > len(head) // 2 else head


def generic_texts_for(tok, n: int, source: str = "generic", seed: int = 4321,
                      context: int = 0) -> tuple[list[str], list[list[dict]], list[list[int]]]:
    """Like `parity_texts` for a non-arith set: raw prompts, chat prompts and teacher-forced token ids.

    `source` is "generic" (the built-in held-out split) or a JSONL path. A chat whose last turn is the
    assistant's is scored whole and prompted without that turn. Chats go only to a tokenizer with a chat
    template; greedy chat prompts that would not fit `context` with the reply are left out.
    """
    from lifecycle.data.generic import fit_chat, generic_chats, generic_texts, read_prompt_file, records

    if source == "generic":  # at most one pass over the held-out split: no repeated inputs
        texts = generic_texts(min(n, len(records("texts", "held"))), seed, split="held")
        chats = generic_chats(min(n, len(records("chats", "held"))), seed, split="held")
    else:
        texts, chats = read_prompt_file(source)
        texts, chats = texts[:n], chats[:n]
    cap = min(TOKENS_PER_TEXT, context) if context else TOKENS_PER_TEXT
    seqs = [ids[:cap] for ids in (tok(t, add_special_tokens=True).input_ids for t in texts)]
    raw = [_prefix(tok, t, PROMPT_TOKENS) for t in texts]
    prompts: list[list[dict]] = []
    if getattr(tok, "chat_template", None):
        for chat in chats:
            chat = fit_chat(tok, chat)
            ask = chat[:-1] if chat[-1].get("role") == "assistant" else chat
            whole = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=ask is chat)
            seqs.append(tok(whole, add_special_tokens=False).input_ids[:cap])
            rendered = tok.apply_chat_template(ask, tokenize=False, add_generation_prompt=True)
            if ask and (not context or len(tok(rendered, add_special_tokens=False).input_ids) + GREEDY_TOKENS <= context):
                prompts.append(ask)
    seqs = [s for s in seqs if len(s) >= 2]
    if not seqs:
        raise UserError(f"parity set {source!r} gives no text to compare (a chats-only file needs a chat template)")
    return raw, prompts, seqs


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
    chosen = resolve_set(texts, getattr(parent, "artifact", None))
    has_chat = bool(getattr(tok, "chat_template", None))
    if chosen == "arith":
        raw, chats, seqs = parity_texts(tok, prompts)
        greedy_raw = SamplingParams(max_tokens=6, stop=["\n"])
    else:
        raw, chats, seqs = generic_texts_for(tok, prompts, chosen, context=parent.context_length)
        greedy_raw = SamplingParams(max_tokens=GREEDY_TOKENS)
    out = _teacher_forced(parent, child, seqs)
    nll_child, nll_parent = out.pop("nll")
    out["parity_set"] = chosen

    greedy_chat = SamplingParams(max_tokens=GREEDY_TOKENS)
    chats = chats if has_chat else []
    pa = [c.text for c in parent.generate(raw, greedy_raw) + (parent.generate(chats, greedy_chat) if chats else [])]
    ch = [c.text for c in child.generate(raw, greedy_raw) + (child.generate(chats, greedy_chat) if chats else [])]
    out["greedy_agreement"] = sum(a == b for a, b in zip(pa, ch)) / max(len(pa), 1)

    if chosen != "arith":
        out.update(nll_per_token=round(nll_child, 6), parent_nll_per_token=round(nll_parent, 6),
                   nll_delta=round(nll_child - nll_parent, 6), greedy_prompts=len(pa))
    elif eval_items:
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
    out["decode_tok_s"] = decode_speed(child, raw[0] if chosen != "arith" and raw else None)
    return out


def decode_speed(engine: Engine, prompt: str | None = None, tokens: int = 64) -> float:
    """Greedy tokens/s at batch 1 on a raw prompt (the model may stop early at EOS; counted tokens only).
    The default prompt is sums (the arithmetic demo); other models pass one of their parity prompts."""
    engine.generate([prompt[:8] if prompt else "1+2="], SamplingParams(max_tokens=4))  # warm-up
    t0 = time.perf_counter()
    [c] = engine.generate([prompt or "12+34=\n5+6="], SamplingParams(max_tokens=tokens))
    return round(c.completion_tokens / max(time.perf_counter() - t0, 1e-9), 1)
