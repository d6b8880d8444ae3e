"""The transformers/torch engine for `hf` checkpoints and `adapter` artifacts (base + LoRA, merged in memory)."""

from __future__ import annotations

import queue
import threading
from typing import Iterator

from lifecycle.artifact import Artifact
from lifecycle.engine import (Completion, Engine, Prompt, SamplingParams, Score, StreamEvent, detokenize_stream,
                              first_stop)
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
        if isinstance(prompt, str):
            return self.tok(prompt, add_special_tokens=True).input_ids
        return self.tok(self.apply_chat_template(prompt), add_special_tokens=False).input_ids

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

    def _finish(self, new_ids: list[int], params: SamplingParams) -> tuple[str, int, str]:
        """Cut at EOS, decode, cut at the first stop string; return (text, tokens, finish_reason)."""
        reason = "length"
        for i, t in enumerate(new_ids):
            if t in self.eos_ids:
                new_ids, reason = new_ids[: i + 1], "stop"
                break
        text = self.tok.decode(new_ids, skip_special_tokens=True)
        cut = first_stop(text, params.stop)
        if cut is not None:
            text, reason = text[:cut], "stop"
        return text, len(new_ids), reason

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
            width = max(len(x) for x in batch)
            pad = self.pad_id
            input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch], device=self.device)
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch], device=self.device)
            with torch.inference_mode():
                gen = self.model.generate(input_ids=input_ids, attention_mask=mask, **self._gen_kwargs(params))
            for row, ids in zip(gen, batch):
                text, n, reason = self._finish(row[width:].tolist(), params)
                out.append(Completion(text=text, prompt_tokens=len(ids), completion_tokens=n, finish_reason=reason))
        return out

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[StreamEvent]:
        """Yield text as tokens arrive; text that could begin a stop string is held back until resolved."""
        params = params or SamplingParams()
        torch = self.torch
        ids = self._encode(prompt)
        self._check_length(ids, params)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        tokens: queue.Queue = queue.Queue()
        halt = threading.Event()
        streamer = _QueueStreamer(tokens)
        kwargs = self._gen_kwargs(params)
        kwargs.pop("stop_strings", None)
        kwargs.pop("tokenizer", None)
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Halt(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return torch.full((input_ids.shape[0],), halt.is_set(), dtype=torch.bool)

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(input_ids=torch.tensor([ids], device=self.device),
                                        attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=self.device),
                                        streamer=streamer, stopping_criteria=StoppingCriteriaList([_Halt()]), **kwargs)
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
                yield item

        try:
            yield from detokenize_stream(produced(), lambda ids: self.tok.decode(ids, skip_special_tokens=True),
                                         params, self.eos_ids, self.byte_ids)
        finally:  # EOS, a stop string or a closed consumer: stop the generating thread
            halt.set()
            worker.join(timeout=30)

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


class _QueueStreamer:
    """A transformers streamer that hands generated token ids to a queue (the prompt is skipped)."""

    def __init__(self, q: queue.Queue):
        self.q = q
        self.skipped_prompt = False

    def put(self, value) -> None:
        if not self.skipped_prompt:
            self.skipped_prompt = True
            return
        for t in value.reshape(-1).tolist():
            self.q.put(t)

    def end(self) -> None:
        pass
