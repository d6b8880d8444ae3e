"""Log-probabilities of chosen tokens under a causal LM, in bounded memory.

    [(logprob, n, greedy)] = span_logprobs(model, [ids], [(first, len(ids))], pad_id=0)

A full-vocabulary log-softmax over a whole padded batch costs batch x length x vocab floats: 2.5 GB for 32
rows of 128 tokens on a 151k vocabulary. Here rows are grouped so that the logits computed at once stay under
a budget, logits are computed only at the positions whose next token is scored (`logits_to_keep`, where the
model supports it), and each row's log-probabilities are a gather minus a logsumexp, never a stored
log-softmax.
"""

from __future__ import annotations

import inspect

LOGIT_BUDGET = 1 << 25  # logits held at once (32M floats: 64 MB in bf16, 128 MB in fp32)


def _supports_logits_to_keep(model) -> bool:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft passes kwargs through
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def _chunks(rows: list[list[int]], spans: list[tuple[int, int]], vocab: int, max_rows: int):
    """Consecutive groups of row indices whose kept logits fit the budget (a single row always goes)."""
    group: list[int] = []
    positions: set[int] = set()
    for i, (a, b) in enumerate(spans):
        grown = positions | set(range(a - 1, b - 1))
        if group and (len(group) >= max_rows or (len(group) + 1) * max(len(grown), 1) * vocab > LOGIT_BUDGET):
            yield group
            group, grown = [], set(range(a - 1, b - 1))
        group.append(i)
        positions = grown
    if group:
        yield group


def span_logprobs(model, rows: list[list[int]], spans: list[tuple[int, int]], pad_id: int,
                  max_rows: int = 32) -> list[tuple[float, int, bool]]:
    """For each token-id row and span [a, b) (a >= 1): (sum of log p(row[t] | row[:t]) for t in span,
    number of tokens, whether every one was the argmax)."""
    import torch

    vocab = int(getattr(model.config, "vocab_size", 0) or model.get_output_embeddings().weight.shape[0])
    keep_ok = _supports_logits_to_keep(model)
    device = next(model.parameters()).device
    out: list[tuple[float, int, bool]] = [(0.0, 0, True)] * len(rows)
    for group in _chunks(rows, spans, vocab, max_rows):
        width = max(len(rows[i]) for i in group)
        ids = torch.tensor([rows[i] + [pad_id] * (width - len(rows[i])) for i in group], device=device)
        mask = torch.tensor([[1] * len(rows[i]) + [0] * (width - len(rows[i])) for i in group], device=device)
        needed = sorted({p for i in group for p in range(spans[i][0] - 1, spans[i][1] - 1)})
        if not needed:
            continue
        kwargs = {"logits_to_keep": torch.tensor(needed, device=device)} if keep_ok else {}
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, **kwargs).logits
        where = {p: j for j, p in enumerate(needed)} if keep_ok else None
        for row, i in enumerate(group):
            a, b = spans[i]
            if b <= a:
                continue
            cols = [where[p] for p in range(a - 1, b - 1)] if where else list(range(a - 1, b - 1))
            sel = logits[row, cols].float()
            targets = ids[row, a:b]
            picked = sel.gather(-1, targets[:, None]).squeeze(-1)
            logp = picked - torch.logsumexp(sel, dim=-1)
            greedy = bool((sel.argmax(-1) == targets).all())
            out[i] = (float(logp.sum()), b - a, greedy)
        del logits
    return out
