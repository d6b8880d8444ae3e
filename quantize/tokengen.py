"""A token-loop Engine for runtimes that give next-token logits one step at a time (llama.cpp, ORT GenAI).

Subclasses implement `_prefill(ids) -> logits of the last position`, `_step(token) -> logits` and
`logits(ids) -> [len(ids), vocab]`, and may override `_rows(ids, start)` to compute only the rows `score`
needs. Prompts are tokenized and chats rendered with the artifact's own Hugging Face tokenizer files (copied
into every converted artifact), so every engine sees the same ids. Sampling (greedy, temperature, top-p,
seed), stop strings, EOS ids and streaming live here, once.

Context: runtimes size their buffers (KV cache, logits) by the context they open, and real checkpoints
declare 128k positions, so engines open `bounded_context(...)` positions (default at most 4096).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from lifecycle.engine import (Completion, Engine, Prompt, SamplingParams, Score, StreamEvent, byte_fallback_ids,
                              detokenize_stream)
from lifecycle.errors import UserError

DEFAULT_CONTEXT = 4096  # positions opened when the caller does not ask for a context length
LOGITS_BLOCK_BYTES = 32 << 20  # float32 logits rows computed (and held) at once when scoring


def bounded_context(requested: int, trained: int, default: int = DEFAULT_CONTEXT) -> int:
    """The context to open: `requested`, or min(trained, default) when it is 0; never beyond the trained one."""
    if requested < 0:
        raise UserError(f"context_length must be >= 0 (0 = min(model's trained context, {default})), got {requested}")
    if not requested:
        return min(trained, default) if trained > 0 else default
    if trained > 0 and requested > trained:
        raise UserError(f"context_length {requested} exceeds the model's trained context {trained}")
    return requested


def eos_ids_of(value) -> list[int]:
    """An `eos_token_id` field (an int, a list or None) as a list."""
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if v is not None]


def generation_config_eos(folder: Path | None) -> list[int]:
    """Every EOS id in the folder's generation_config.json (Llama-3 lists three), or []."""
    path = Path(folder) / "generation_config.json" if folder is not None else None
    if path is None or not path.is_file():
        return []
    try:
        return eos_ids_of(json.loads(path.read_text()).get("eos_token_id"))
    except (OSError, ValueError, AttributeError):
        return []


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    from lifecycle.loading import quiet_libraries

    quiet_libraries()
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


class TokenEngine(Engine):
    def __init__(self, tokenizer, artifact=None, context_length: int = 0, eos_ids: list[int] | None = None):
        """`eos_ids` are the runtime's; the tokenizer's EOS and generation_config.json's are added to them."""
        self.tok = tokenizer
        self.artifact = artifact
        self._ctx = context_length
        eos = set(eos_ids or []) | set(eos_ids_of(tokenizer.eos_token_id))
        eos |= set(generation_config_eos(getattr(artifact, "path", None)))
        self.eos_ids = sorted(e for e in eos if e >= 0)
        self.byte_ids = byte_fallback_ids(tokenizer)
        self._lock = threading.Lock()

    # subclasses -------------------------------------------------------------------------------------
    def _prefill(self, ids: list[int]) -> np.ndarray:
        raise NotImplementedError

    def _step(self, token: int) -> np.ndarray:
        raise NotImplementedError

    def logits(self, ids: list[int]) -> np.ndarray:
        raise NotImplementedError

    def _rows(self, ids: list[int], start: int) -> Iterator[np.ndarray]:
        """Logits rows for positions start..len(ids)-1, in blocks (runtimes that can skip rows override this)."""
        yield self.logits(ids)[start:]

    # prompts ----------------------------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        return self._ctx

    def _encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tok(prompt, add_special_tokens=True).input_ids
        if not getattr(self.tok, "chat_template", None):
            raise UserError("this model's tokenizer has no chat template; send a raw prompt instead")
        text = self.tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return self.tok(text, add_special_tokens=False).input_ids

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self._encode(prompt))

    def _check_fits(self, ids: list[int]) -> None:
        if self._ctx and len(ids) > self._ctx:
            raise UserError(f"{len(ids)} tokens exceed the context length {self._ctx}")

    def _check_length(self, ids: list[int], params: SamplingParams) -> None:
        if self._ctx and len(ids) + params.max_tokens > self._ctx:
            raise UserError(f"prompt ({len(ids)} tokens) + max_tokens ({params.max_tokens}) exceeds the "
                            f"context length {self._ctx}")

    # decoding ---------------------------------------------------------------------------------------
    @staticmethod
    def _pick(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
        if params.temperature <= 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / params.temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        if params.top_p < 1.0:
            order = np.argsort(-p)
            keep = order[: int(np.searchsorted(np.cumsum(p[order]), params.top_p) + 1)]
            mask = np.zeros_like(p)
            mask[keep] = p[keep]
            p = mask / mask.sum()
        return int(rng.choice(len(p), p=p))

    def _tokens(self, ids: list[int], params: SamplingParams) -> Iterator[int]:
        rng = np.random.default_rng(params.seed)
        logits = self._prefill(ids)
        for i in range(params.max_tokens):
            t = self._pick(logits, params, rng)
            yield t
            if t in self.eos_ids or i == params.max_tokens - 1:
                return
            logits = self._step(t)

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def generate(self, prompts: list[Prompt], params: SamplingParams | None = None) -> list[Completion]:
        params = params or SamplingParams()
        out = []
        for prompt in prompts:
            ids = self._encode(prompt)
            events = list(self.stream(prompt, params))
            out.append(Completion(text="".join(e.text for e in events), prompt_tokens=len(ids),
                                  completion_tokens=events[-1].completion_tokens, finish_reason=events[-1].finish_reason))
        return out

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[StreamEvent]:
        """Yield text as tokens arrive. The runtime's context is not thread-safe (llama.cpp aborts on two
        concurrent decodes), so one request at a time holds it; a closed stream releases it."""
        params = params or SamplingParams()
        ids = self._encode(prompt)
        if not ids:
            raise UserError("the prompt is empty (and this tokenizer adds no BOS token)")
        self._check_length(ids, params)
        with self._lock:
            yield from detokenize_stream(self._tokens(ids, params), self._decode, params, self.eos_ids, self.byte_ids)

    def score(self, requests: list[tuple[str, str]]) -> list[Score]:
        """Continuation log-likelihoods, reading only the rows that predict continuation tokens, a block at a time."""
        results = []
        for ctx, cont in requests:
            enc = self.tok(ctx + cont, add_special_tokens=True, return_offsets_mapping=True)
            ids = enc.input_ids
            self._check_fits(ids)
            first = next((i for i, (s, e) in enumerate(enc.offset_mapping) if e > len(ctx)), len(ids))
            first = max(first, 1)
            total, greedy, pos = 0.0, True, first - 1  # row `pos` predicts token pos + 1
            if first < len(ids):
                with self._lock:
                    for block in self._rows(ids, first - 1):
                        block = np.asarray(block)[: len(ids) - 1 - pos]
                        if not len(block):
                            continue
                        targets = np.array(ids[pos + 1: pos + 1 + len(block)], dtype=np.int64)
                        greedy = greedy and bool((block.argmax(-1) == targets).all())
                        z = block.astype(np.float64)
                        z -= z.max(-1, keepdims=True)
                        picked = z[np.arange(len(targets)), targets]
                        np.exp(z, out=z)
                        total += float((picked - np.log(z.sum(-1))).sum())
                        pos += len(block)
            results.append(Score(logprob=total, num_tokens=len(ids) - first, is_greedy=greedy))
        return results
