"""A token-loop Engine for runtimes that give next-token logits one step at a time (llama.cpp, ORT GenAI).

Subclasses implement `_prefill(ids) -> logits of the last position`, `_step(token) -> logits` and
`logits(ids) -> [len(ids), vocab]`. Prompts are tokenized and chats rendered with the artifact's own
Hugging Face tokenizer files (copied into every converted artifact), so every engine sees the same ids.
Sampling (greedy, temperature, top-p, seed), stop strings and streaming live here, once.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from lifecycle.engine import Completion, Engine, Prompt, SamplingParams, Score, StreamEvent, detokenize_stream
from lifecycle.errors import UserError


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    from lifecycle.train.common import quiet_libraries

    quiet_libraries()
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


class TokenEngine(Engine):
    def __init__(self, tokenizer, artifact=None, context_length: int = 0, eos_ids: list[int] | None = None):
        self.tok = tokenizer
        self.artifact = artifact
        self._ctx = context_length
        eos = set(eos_ids or []) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        self.eos_ids = sorted(eos)
        self._lock = threading.Lock()

    # subclasses -------------------------------------------------------------------------------------
    def _prefill(self, ids: list[int]) -> np.ndarray:
        raise NotImplementedError

    def _step(self, token: int) -> np.ndarray:
        raise NotImplementedError

    def logits(self, ids: list[int]) -> np.ndarray:
        raise NotImplementedError

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
        self._check_length(ids, params)
        with self._lock:
            yield from detokenize_stream(self._tokens(ids, params), self._decode, params, self.eos_ids)

    def score(self, requests: list[tuple[str, str]]) -> list[Score]:
        results = []
        for ctx, cont in requests:
            enc = self.tok(ctx + cont, add_special_tokens=True, return_offsets_mapping=True)
            ids = enc.input_ids
            first = next((i for i, (s, e) in enumerate(enc.offset_mapping) if e > len(ctx)), len(ids))
            first = max(first, 1)
            with self._lock:
                z = self.logits(ids).astype(np.float64)
            logp = z - z.max(-1, keepdims=True)
            logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
            rows, targets = logp[first - 1: len(ids) - 1], np.array(ids[first:], dtype=np.int64)
            lp = rows[np.arange(len(targets)), targets] if len(targets) else np.zeros(0)
            greedy = bool((rows.argmax(-1) == targets).all()) if len(targets) else True
            results.append(Score(logprob=float(lp.sum()), num_tokens=len(targets), is_greedy=greedy))
        return results
