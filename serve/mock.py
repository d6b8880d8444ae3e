"""A model-free Engine for testing the serving layer (`--model mock` or `--model NAME=mock`).

It "generates" by echoing the prompt's words back, one word per token, so outputs are predictable:
`generate(["a b c"], SamplingParams(max_tokens=2))` -> text " a b", finish_reason "length".
The word "fail" in a prompt raises inside the engine, to test that a failing request stays contained.

Prompts: a string is split on whitespace; a chat is its contents joined; token ids [7, 9] are the words
"t7 t9". A token's id is its word's CRC-32 mod 50,000 (the same word always has the same id).

Fake, deterministic logprobs (`params.logprobs` / `prompt_logprobs`): a token whose text is T has logprob
-len(T.strip()) / 10; its top-k alternatives are the token itself, then "alt1".."alt{k-1}" (ids 50001...)
at 1, 2, ... below it. The first prompt token has logprob None. The same prompt and parameters always
give the same numbers, streamed or not.

`response_format`: json_object gives `{"echo": "<the words>"}` (max_tokens words); json_schema is refused
(UserError), as on engines that cannot constrain decoding.
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Iterator

from lifecycle.engine import Completion, Engine, Prompt, SamplingParams, Score, StreamEvent, TokenLogprob
from lifecycle.errors import UserError


def fake_logprob(text: str, k: int | None) -> TokenLogprob:
    """The mock's TokenLogprob for a token whose text is `text` (see the module docstring)."""
    lp = -len(text.strip()) / 10
    tid = zlib.crc32(text.strip().encode()) % 50000
    top = [TokenLogprob(text, tid, list(text.encode()), lp)] if k else []
    top += [TokenLogprob(f"alt{j}", 50000 + j, list(f"alt{j}".encode()), lp - j) for j in range(1, k or 0)]
    return TokenLogprob(text, tid, list(text.encode()), lp, top)


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
        if isinstance(prompt, str):
            return prompt
        if prompt and all(isinstance(t, int) for t in prompt):
            return " ".join(f"t{t}" for t in prompt)
        return " ".join(m["content"] for m in prompt)

    def count_tokens(self, prompt: Prompt) -> int:
        return len(self._text(prompt).split())

    def _words(self, prompt: Prompt, params: SamplingParams) -> tuple[list[str], str, int]:
        """(text pieces, finish_reason, words generated); completion_tokens counts the pieces."""
        text = self._text(prompt)
        if "fail" in text.split():
            raise RuntimeError("mock engine failure (the prompt asked for it)")
        words = text.split() or ["empty"]
        out = [words[i % len(words)] for i in range(params.max_tokens)]
        if params.response_format and params.response_format.get("type") != "text":
            if params.response_format.get("type") != "json_object":
                raise UserError("response_format json_schema is not supported by the mock engine; "
                                "use json_object")
            return [json.dumps({"echo": " ".join(out)})], "stop", len(out)
        joined = ""
        for i, w in enumerate(out):
            joined += " " + w
            cut = min((joined.find(s) for s in params.stop if s and s in joined), default=-1)
            if cut >= 0:
                return [joined[:cut]], "stop", i + 1
        return [" " + w for w in out], "length", len(out)

    def _logprobs(self, pieces: list[str], params: SamplingParams) -> list[TokenLogprob] | None:
        if params.logprobs is None:
            return None
        text = "".join(pieces)
        return [fake_logprob(" " + w, params.logprobs) for w in text.split()]

    def _prompt_logprobs(self, prompt: Prompt, params: SamplingParams) -> list[TokenLogprob] | None:
        if params.prompt_logprobs is None:
            return None
        words = self._text(prompt).split()
        out = [fake_logprob(w if i == 0 else " " + w, params.prompt_logprobs) for i, w in enumerate(words)]
        if out:
            out[0].logprob, out[0].top = None, []
        return out

    def generate(self, prompts: list[Prompt], params: SamplingParams | None = None) -> list[Completion]:
        params = params or SamplingParams()
        self.calls.append(len(prompts))
        results = []
        for p in prompts:
            pieces, reason, _ = self._words(p, params)
            time.sleep(self.delay_s * len(pieces))
            results.append(Completion("".join(pieces), self.count_tokens(p), len(pieces), reason,
                                      self._logprobs(pieces, params), self._prompt_logprobs(p, params)))
        return results

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[StreamEvent]:
        params = params or SamplingParams()
        pieces, reason, _ = self._words(prompt, params)
        prompt_lps = self._prompt_logprobs(prompt, params)
        for i, piece in enumerate(pieces):
            time.sleep(self.delay_s)
            yield StreamEvent(piece, completion_tokens=i + 1, logprobs=self._logprobs([piece], params),
                              prompt_logprobs=prompt_lps if i == 0 else None)
        yield StreamEvent("", finish_reason=reason, completion_tokens=len(pieces),
                          logprobs=[] if params.logprobs is not None else None,
                          prompt_logprobs=prompt_lps if not pieces else None)

    def score(self, requests: list[tuple[str, str]]) -> list[Score]:
        return [Score(logprob=0.0, num_tokens=len(c.split()), is_greedy=True) for _, c in requests]
