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


# ---- per-token log-probabilities for the serving API (TokenLogprob) -------------------------------------
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: printable stand-in character -> raw byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


class TokenTexts:
    """Each token's own text and true bytes, cached: byte-level BPE pieces are mapped back through GPT-2's
    byte alphabet, SentencePiece byte-fallback pieces (`<0xE4>`) are their byte, `▁` is a space; special
    tokens are their text. Anything else is decoded alone."""

    def __init__(self, tok):
        from lifecycle.chat_tokens import special_ids

        self.tok = tok
        self.special = special_ids(tok)
        backend = getattr(tok, "backend_tokenizer", None)
        decoder = str(getattr(backend, "decoder", "") or "")
        self.byte_level = "ByteLevel" in decoder
        self.metaspace = "▁" in decoder or "Metaspace" in decoder
        self.bytes_of = _byte_decoder() if self.byte_level else {}
        self.cache: dict[int, tuple[str, list[int]]] = {}

    def get(self, token_id: int) -> tuple[str, list[int]]:
        hit = self.cache.get(token_id)
        if hit is not None:
            return hit
        piece = self.tok.convert_ids_to_tokens(int(token_id))
        raw: bytes | None = None
        if piece is None:
            raw = b""
        elif token_id in self.special:
            raw = piece.encode()
        elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            raw = bytes([int(piece[3:5], 16)])
        elif self.byte_level and all(c in self.bytes_of for c in piece):
            raw = bytes(self.bytes_of[c] for c in piece)
        elif self.metaspace:
            raw = piece.replace("▁", " ").encode()
        if raw is None:
            text = self.tok.decode([int(token_id)])
            raw = text.encode()
        else:
            text = raw.decode("utf-8", errors="replace")
        self.cache[token_id] = hit = (text, list(raw))
        return hit


def token_logprob(texts: TokenTexts, token_id: int, logprob: float | None, top: list[tuple[int, float]] = ()):
    """A TokenLogprob for `token_id` with its top alternatives [(id, logprob)]."""
    from lifecycle.engine import TokenLogprob

    def one(i: int, lp: float | None, alts: list) -> TokenLogprob:
        text, raw = texts.get(int(i))
        return TokenLogprob(text, int(i), raw, None if lp is None else float(lp), alts)

    return one(token_id, logprob, [one(i, lp, []) for i, lp in top])


def rows_logprobs(logits, chosen: list[int], k: int, texts: TokenTexts) -> list:
    """TokenLogprobs of `chosen[i]` under row i of `logits` ([n, vocab], numpy or torch), log_softmax in float32."""
    import numpy as np

    if not len(chosen):
        return []
    z = np.asarray(logits.float().cpu() if hasattr(logits, "float") else logits, dtype=np.float32)
    z = z.reshape(len(chosen), -1)
    z = z - z.max(-1, keepdims=True)
    lsm = z - np.log(np.exp(z).sum(-1, keepdims=True))
    out = []
    for row, t in zip(lsm, chosen):
        top: list[tuple[int, float]] = []
        if k:
            idx = np.argpartition(-row, min(k, len(row) - 1))[:k]
            idx = idx[np.argsort(-row[idx], kind="stable")]
            top = [(int(i), float(row[i])) for i in idx]
        out.append(token_logprob(texts, int(t), float(row[int(t)]), top))
    return out


def prompt_logprobs_from_rows(rows, ids: list[int], k: int, texts: TokenTexts, first_row: int = 0) -> list:
    """Prompt logprobs from logits rows: row j predicts ids[j + 1]; the first token gets None."""
    head = [token_logprob(texts, ids[0], None)]
    return head + rows_logprobs(rows[first_row: first_row + len(ids) - 1], ids[1:], k, texts)
