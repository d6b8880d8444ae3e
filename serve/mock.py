"""A model-free Engine for testing the serving layer (`--model mock` or `--model NAME=mock`).

It "generates" by echoing the prompt's words back, one word per token, so outputs are predictable:
`generate(["a b c"], SamplingParams(max_tokens=2))` -> text " a b", finish_reason "length".
The word "fail" in a prompt raises inside the engine, to test that a failing request stays contained.
"""

from __future__ import annotations

import time
from typing import Iterator

from lifecycle.engine import Completion, Engine, Prompt, SamplingParams, Score, StreamEvent


class MockEngine(Engine):
    def __init__(self, context_length: int = 512, delay_s: float = 0.0, max_batch_size: int = 8):
        self._context_length = context_length
        self.delay_s = delay_s
        self.max_batch_size = max_batch_size
        self.calls: list[int] = []  # batch size of each generate call

    @property
    def context_length(self) -> int:
        return self._context_length

    def _text(self, prompt: Prompt) -> str:
        return prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self._text(prompt).split())

    def _words(self, prompt: Prompt, params: SamplingParams) -> tuple[list[str], str]:
        text = self._text(prompt)
        if "fail" in text.split():
            raise RuntimeError("mock engine failure (the prompt asked for it)")
        words = text.split() or ["empty"]
        out = [words[i % len(words)] for i in range(params.max_tokens)]
        reason = "length"
        joined = ""
        for i, w in enumerate(out):
            joined += " " + w
            cut = min((joined.find(s) for s in params.stop if s in joined), default=-1)
            if cut >= 0:
                return [joined[:cut]], "stop"
        return [" " + w for w in out], reason

    def generate(self, prompts: list[Prompt], params: SamplingParams | None = None) -> list[Completion]:
        params = params or SamplingParams()
        self.calls.append(len(prompts))
        results = []
        for p in prompts:
            pieces, reason = self._words(p, params)
            time.sleep(self.delay_s * len(pieces))
            results.append(Completion("".join(pieces), self.count_tokens(p), len(pieces), reason))
        return results

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[StreamEvent]:
        params = params or SamplingParams()
        pieces, reason = self._words(prompt, params)
        for i, piece in enumerate(pieces):
            time.sleep(self.delay_s)
            yield StreamEvent(piece, completion_tokens=i + 1)
        yield StreamEvent("", finish_reason=reason, completion_tokens=len(pieces))

    def score(self, requests: list[tuple[str, str]]) -> list[Score]:
        return [Score(logprob=0.0, num_tokens=len(c.split()), is_greedy=True) for _, c in requests]
