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
        """Raw text with its special tokens parsed, a chat whose content stays text, or token ids as given."""
        from lifecycle.chat_tokens import encode_prompt

        return encode_prompt(self.tok, prompt, vocab_size=self.vocab_size)

    @property
    def vocab_size(self) -> int:
        """Rows of the runtime's logits (0: the tokenizer's length)."""
        return 0

    @property
    def _texts(self):
        from lifecycle.logprobs import TokenTexts

        if getattr(self, "_token_texts", None) is None:
            self._token_texts = TokenTexts(self.tok)
        return self._token_texts

    def _constraint(self, params: SamplingParams):
        """What masks the logits for `params.response_format` (None: nothing to enforce). Runtimes whose
        grammar support is wired in override this."""
        from lifecycle.constrain import json_schema_of

        if json_schema_of(params.response_format) is not None:
            name = getattr(self.artifact, "format", None) or type(self).__name__
            raise UserError(f"response_format is not supported by the {name} engine; use a gguf-* "
                            "or torch (hf, int8, int4, fp8, gptq) artifact for JSON output")
        return None

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

    def _tokens(self, ids: list[int], params: SamplingParams, entries: list | None = None, guide=None) -> Iterator[int]:
        """Sample up to max_tokens ids; with `entries`, append each one's TokenLogprob (from the raw logits)
        before yielding it; with `guide`, pick only among the tokens it allows."""
        from lifecycle.logprobs import rows_logprobs

        rng = np.random.default_rng(params.seed)
        if params.max_tokens <= 0:
            return
        logits = self._prefill(ids)
        for i in range(params.max_tokens):
            t = self._pick(guide.mask(logits, greedy=params.temperature <= 0) if guide is not None else logits,
                           params, rng)
            if entries is not None:
                entries.extend(rows_logprobs(logits[None], [t], params.logprobs, self._texts))
            if guide is not None:
                guide.accept(t)
            yield t
            if t in self.eos_ids or i == params.max_tokens - 1:
                return
            logits = self._step(t)

    def _prompt_logprobs(self, ids: list[int], k: int) -> list:
        """Every prompt token's TokenLogprob (the first has none), reading the logits rows a block at a time."""
        from lifecycle.logprobs import rows_logprobs, token_logprob

        out = [token_logprob(self._texts, ids[0], None)]
        pos = 0  # row `pos` predicts ids[pos + 1]
        if len(ids) > 1:
            for block in self._rows(ids, 0):
                block = np.asarray(block)[: len(ids) - 1 - pos]
                if not len(block):
                    continue
                out += rows_logprobs(block, ids[pos + 1: pos + 1 + len(block)], k, self._texts)
                pos += len(block)
        return out

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def generate(self, prompts: list[Prompt], params: SamplingParams | None = None) -> list[Completion]:
        params = params or SamplingParams()
        out = []
        for prompt in prompts:
            ids = self._encode(prompt)
            events = list(self._stream_ids(ids, params))
            lps = [x for e in events for x in e.logprobs or []] if params.logprobs is not None else None
            out.append(Completion(text="".join(e.text for e in events), prompt_tokens=len(ids),
                                  completion_tokens=events[-1].completion_tokens, finish_reason=events[-1].finish_reason,
                                  logprobs=lps, prompt_logprobs=events[0].prompt_logprobs))
        return out

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[StreamEvent]:
        """Yield text as tokens arrive. The runtime's context is not thread-safe (llama.cpp aborts on two
        concurrent decodes), so one request at a time holds it; a closed stream releases it."""
        params = params or SamplingParams()
        return self._stream_ids(self._encode(prompt), params)

    def _stream_ids(self, ids: list[int], params: SamplingParams) -> Iterator[StreamEvent]:
        if not ids:
            raise UserError("the prompt is empty (and this tokenizer adds no BOS token)")
        self._check_length(ids, params)
        guide = self._constraint(params)  # refused (UserError) before any work where unsupported
        return self._run(ids, params, guide)

    def _run(self, ids: list[int], params: SamplingParams, guide) -> Iterator[StreamEvent]:
        with self._lock:
            prompt_lps = self._prompt_logprobs(ids, params.prompt_logprobs) if params.prompt_logprobs is not None else None
            entries = [] if params.logprobs is not None else None
            first = True
            for ev in detokenize_stream(self._tokens(ids, params, entries, guide), self._decode, params, self.eos_ids,
                                        self.byte_ids, logprobs=entries):
                if first:
                    ev.prompt_logprobs, first = prompt_lps, False
                yield ev

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
