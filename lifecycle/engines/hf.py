"""The transformers/torch engine for `hf` checkpoints and `adapter` artifacts (base + LoRA, merged in memory)."""

from __future__ import annotations

import queue
import threading
from typing import Iterator

from lifecycle.artifact import Artifact
from lifecycle.engine import (Completion, Engine, Prompt, SamplingParams, Score, StreamEvent, detokenize_stream,
                              first_stop, kept_tokens)
from lifecycle.errors import UserError


class HFEngine(Engine):
    def __init__(self, model, tokenizer, artifact: Artifact | None = None, max_batch_size: int = 32):
        import torch

        self.torch = torch
        self.model = model.eval()
        self.tok = tokenizer
        self.artifact = artifact
        self.max_batch_size = max_batch_size
        from lifecycle.loading import eos_token_ids, pad_token_id

        from lifecycle.engine import byte_fallback_ids

        self.eos_ids = eos_token_ids(model, tokenizer)
        self.byte_ids = byte_fallback_ids(tokenizer)  # streamed text waits for a byte-fallback run to resolve
        self.pad_id = pad_token_id(tokenizer, self.eos_ids)  # the tokenizer itself is left as it was
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, artifact: Artifact, threads: int = 0, trust_remote_code: bool = False,
             dtype: str = "auto", max_batch_size: int = 32) -> "HFEngine":
        """`dtype="auto"` keeps the checkpoint's dtype (bf16 stays bf16)."""
        from lifecycle.loading import load_causal_lm, quiet_libraries, setup_torch

        quiet_libraries()
        if threads:
            setup_torch(threads, seed=0)
        model, tok = load_causal_lm(artifact, trust_remote_code=trust_remote_code, dtype=dtype)
        return cls(model, tok, artifact, max_batch_size=max_batch_size)

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 0)

    # ---- prompts -------------------------------------------------------------------------------------
    def _encode(self, prompt: Prompt) -> list[int]:
        """Raw text with its special tokens parsed, a chat whose content stays text, or token ids as given."""
        from lifecycle.chat_tokens import encode_prompt

        return encode_prompt(self.tok, prompt, vocab_size=self.vocab_size)

    @property
    def vocab_size(self) -> int:
        """Rows of the model's logits (embedding tables are often padded beyond the tokenizer)."""
        return int(getattr(self.model.config, "vocab_size", 0) or len(self.tok))

    @property
    def _texts(self):
        from lifecycle.logprobs import TokenTexts

        if getattr(self, "_token_texts", None) is None:
            self._token_texts = TokenTexts(self.tok)
        return self._token_texts

    def _prompt_logprobs(self, ids: list[int], k: int) -> list:
        """Every prompt token's TokenLogprob under the model (the first has none), a block of rows at a time."""
        from lifecycle.logprobs import LOGIT_BUDGET, _supports_logits_to_keep, rows_logprobs, token_logprob

        torch = self.torch
        out = [token_logprob(self._texts, ids[0], None)]
        n = len(ids) - 1  # rows 0..n-1 predict ids[1..n]
        block = max(1, LOGIT_BUDGET // max(self.vocab_size, 1))
        x = torch.tensor([ids], device=self.device)
        keep = _supports_logits_to_keep(self.model)
        with torch.inference_mode():
            for a in range(0, n, block):
                b = min(n, a + block)
                if keep and (a or b < len(ids)):
                    logits = self.model(input_ids=x, logits_to_keep=torch.arange(a, b, device=self.device)).logits[0]
                else:
                    logits = self.model(input_ids=x).logits[0, a:b]
                out += rows_logprobs(logits, ids[a + 1: b + 1], k, self._texts)
        return out

    def _processors(self, params: SamplingParams, batch: int) -> list:
        """Logits processors for `params`: the response_format constraint (llguidance), or none."""
        from lifecycle.constrain import json_logits_processor, json_schema_of

        schema = json_schema_of(params.response_format)
        if schema is None:
            return []
        return [json_logits_processor(self.tok, schema, self.vocab_size, self.eos_ids, batch)]

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self._encode(prompt))

    def _check_length(self, ids: list[int], params: SamplingParams) -> None:
        limit = self.context_length
        if limit and len(ids) + params.max_tokens > limit:
            raise UserError(f"prompt ({len(ids)} tokens) + max_tokens ({params.max_tokens}) exceeds the "
                            f"context length {limit}")

    def _gen_kwargs(self, params: SamplingParams) -> dict:
        kw = dict(max_new_tokens=params.max_tokens, eos_token_id=self.eos_ids,
                  pad_token_id=self.pad_id, do_sample=params.temperature > 0)
        if params.temperature > 0:
            kw.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.stop:
            kw.update(stop_strings=params.stop, tokenizer=self.tok)
        return kw

    def _finish(self, new_ids: list[int], params: SamplingParams) -> tuple[str, int, str, int | None]:
        """Cut at EOS, decode, cut at the first stop string; return (text, tokens, finish_reason, cut)."""
        reason = "length"
        for i, t in enumerate(new_ids):
            if t in self.eos_ids:
                new_ids, reason = new_ids[: i + 1], "stop"
                break
        text = self.tok.decode(new_ids, skip_special_tokens=True)
        cut = first_stop(text, params.stop)
        if cut is not None:
            text, reason = text[:cut], "stop"
        return text, len(new_ids), reason, cut

    # ---- the three operations ------------------------------------------------------------------------
    def generate(self, prompts: list[Prompt], params: SamplingParams | None = None) -> list[Completion]:
        params = params or SamplingParams()
        torch = self.torch
        encoded = [self._encode(p) for p in prompts]
        for ids in encoded:
            self._check_length(ids, params)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        out: list[Completion] = []
        for start in range(0, len(encoded), self.max_batch_size):
            batch = encoded[start: start + self.max_batch_size]
            prompt_lps = [self._prompt_logprobs(x, params.prompt_logprobs) if params.prompt_logprobs is not None
                          else None for x in batch]
            if params.max_tokens == 0:  # score the prompt only
                out += [Completion("", len(x), 0, "length", [] if params.logprobs is not None else None, p)
                        for x, p in zip(batch, prompt_lps)]
                continue
            width = max(len(x) for x in batch)
            pad = self.pad_id
            input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch], device=self.device)
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch], device=self.device)
            procs = self._processors(params, len(batch))
            recorder = _Recorder(self.model, params.logprobs, self._texts) if params.logprobs is not None else None
            try:
                with torch.inference_mode():
                    gen = self.model.generate(input_ids=input_ids, attention_mask=mask, **self._gen_kwargs(params),
                                              logits_processor=([recorder] if recorder else []) + procs)
            finally:
                if recorder:
                    recorder.close()
            for i, (row, ids) in enumerate(zip(gen, batch)):
                new_ids = row[width:].tolist()
                text, n, reason, cut = self._finish(new_ids, params)
                lps = None
                if recorder:
                    lps = recorder.rows_of(i, gen[:, -1].tolist())[:n]
                    lps = lps[: kept_tokens(new_ids[:n], lambda t: self.tok.decode(t, skip_special_tokens=True), cut)]
                out.append(Completion(text=text, prompt_tokens=len(ids), completion_tokens=n, finish_reason=reason,
                                      logprobs=lps, prompt_logprobs=prompt_lps[i]))
        return out

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[StreamEvent]:
        """Yield text as tokens arrive; text that could begin a stop string is held back until resolved."""
        params = params or SamplingParams()
        torch = self.torch
        ids = self._encode(prompt)
        self._check_length(ids, params)
        procs = self._processors(params, 1)
        prompt_lps = self._prompt_logprobs(ids, params.prompt_logprobs) if params.prompt_logprobs is not None else None
        if params.max_tokens == 0:
            yield StreamEvent("", finish_reason="length", logprobs=[] if params.logprobs is not None else None,
                              prompt_logprobs=prompt_lps)
            return
        if params.seed is not None:
            torch.manual_seed(params.seed)
        tokens: queue.Queue = queue.Queue()
        halt = threading.Event()
        recorder = _Recorder(self.model, params.logprobs, self._texts) if params.logprobs is not None else None
        entries: list | None = [] if recorder else None
        streamer = _QueueStreamer(tokens, recorder)
        kwargs = self._gen_kwargs(params)
        kwargs.pop("stop_strings", None)
        kwargs.pop("tokenizer", None)
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Halt(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return torch.full((input_ids.shape[0],), halt.is_set(), dtype=torch.bool)

        def run() -> None:
            try:
                if recorder:
                    recorder.ident = threading.get_ident()
                with torch.inference_mode():
                    self.model.generate(input_ids=torch.tensor([ids], device=self.device),
                                        attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=self.device),
                                        streamer=streamer, stopping_criteria=StoppingCriteriaList([_Halt()]),
                                        logits_processor=([recorder] if recorder else []) + procs, **kwargs)
            except BaseException as e:  # surfaced in the consumer thread below
                tokens.put(e)
            finally:
                tokens.put(None)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()

        def produced() -> Iterator[int]:
            while (item := tokens.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                token, entry = item
                if entries is not None:
                    entries.append(entry)
                yield token

        try:
            first = True
            for ev in detokenize_stream(produced(), lambda ids: self.tok.decode(ids, skip_special_tokens=True),
                                        params, self.eos_ids, self.byte_ids, logprobs=entries):
                if first:
                    ev.prompt_logprobs, first = prompt_lps, False
                yield ev
        finally:  # EOS, a stop string or a closed consumer: stop the generating thread
            halt.set()
            worker.join(timeout=30)
            if recorder:
                recorder.close()

    def score(self, requests: list[tuple[str, str]]) -> list[Score]:
        """Log-likelihood of each continuation, with logits kept only where a continuation token is scored."""
        from lifecycle.logprobs import span_logprobs

        rows, spans = [], []
        for ctx, cont in requests:
            enc = self.tok(ctx + cont, add_special_tokens=True, return_offsets_mapping=True)
            first = next((i for i, (s, e) in enumerate(enc.offset_mapping) if e > len(ctx)), len(enc.input_ids))
            first = max(first, 1)  # the first token has no context to be predicted from
            rows.append(enc.input_ids)
            spans.append((first, len(enc.input_ids)))
        found = span_logprobs(self.model, rows, spans, self.pad_id, max_rows=self.max_batch_size)
        return [Score(logprob=lp, num_tokens=n, is_greedy=g) for lp, n, g in found]

    def close(self) -> None:
        self.model = None


class _Recorder:
    """Each generated token's logprob from the model's raw logits. A forward hook keeps the last position's
    logits of every forward pass that generate runs in the recording thread; as a logits processor (first in
    the list, and transformers runs processors before temperature and top_p) it sees each step's input ids,
    whose last column is the previous step's choice. Entries are built as soon as the token is known."""

    def __init__(self, model, k: int, texts):
        self.k, self.texts = k, texts
        self.ident = threading.get_ident()
        self.raw = None  # [batch, vocab] raw logits of the latest forward pass
        self.pending = None  # the raw rows the next choice is made from
        self.rows: list[list] = []  # per batch row: TokenLogprobs so far
        self.handle = model.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        if threading.get_ident() == self.ident:
            logits = output.logits if hasattr(output, "logits") else output[0]
            self.raw = logits[:, -1].float()

    def _take(self, tokens: list[int]) -> list:
        from lifecycle.logprobs import rows_logprobs

        found = rows_logprobs(self.pending, tokens, self.k, self.texts)
        if not self.rows:
            self.rows = [[] for _ in tokens]
        for row, entry in zip(self.rows, found):
            row.append(entry)
        self.pending = None
        return found

    def __call__(self, input_ids, scores):
        if self.pending is not None:
            self._take(input_ids[:, -1].tolist())
        self.pending = self.raw if self.raw is not None else scores.float()
        return scores

    def rows_of(self, i: int, last: list[int]) -> list:
        """Row i's entries, the final step's included (its choice is the last column of the output)."""
        if self.pending is not None:
            self._take(last)
        return self.rows[i] if self.rows else []

    def close(self) -> None:
        self.handle.remove()


class _QueueStreamer:
    """A transformers streamer that hands generated token ids to a queue (the prompt is skipped), each with
    its TokenLogprob when a recorder is given (None otherwise)."""

    def __init__(self, q: queue.Queue, recorder: _Recorder | None = None):
        self.q = q
        self.recorder = recorder
        self.skipped_prompt = False

    def put(self, value) -> None:
        if not self.skipped_prompt:
            self.skipped_prompt = True
            return
        for t in value.reshape(-1).tolist():
            entry = self.recorder._take([t])[0] if self.recorder is not None and self.recorder.pending is not None else None
            self.q.put((t, entry))

    def end(self) -> None:
        pass
