"""The Engine interface over an OpenAI-compatible HTTP endpoint, so every eval task runs against a server.

    engine = EndpointEngine("http://127.0.0.1:8000")          # model: the first one /v1/models lists
    engine.generate(["12+34="], SamplingParams(max_tokens=4))  # raw prompts -> /v1/completions
    engine.generate([[{"role": "user", "content": "hi"}]])     # chats -> /v1/chat/completions
    engine.score([("12+34=", "46")])                           # /v1/completions with echo + logprobs

`score` needs a server that echoes the prompt with per-token logprobs (vLLM and the legacy OpenAI
completions API do; many others do not): without them it raises one clear error, and only generation
tasks can run. The API key is read from OPENAI_API_KEY when set.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

from lifecycle.engine import Completion, Engine, Prompt, SamplingParams, Score, StreamEvent
from lifecycle.errors import UserError
from lifecycle.sse import iter_events


class EndpointEngine(Engine):
    def __init__(self, url: str, model: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0, concurrency: int = 8):
        import httpx

        base = url.rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        self.url = base
        key = api_key or os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._httpx = httpx
        self.client = httpx.Client(base_url=base, timeout=timeout, headers=headers)
        self.concurrency = max(1, concurrency)
        self.model = model or self._first_model()

    # ---- HTTP -----------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        try:
            resp = self.client.request(method, path, json=body)
        except self._httpx.HTTPError as e:
            raise UserError(f"cannot reach endpoint {self.url}{path}: {e}") from None
        if resp.status_code >= 400:
            raise UserError(f"endpoint {self.url}{path} answered {resp.status_code}: {resp.text[:200]}")
        try:
            return resp.json()
        except ValueError:
            raise UserError(f"endpoint {self.url}{path} did not answer JSON") from None

    def _first_model(self) -> str:
        data = self._request("GET", "/models").get("data") or []
        if not data:
            raise UserError(f"endpoint {self.url} lists no models; pass --endpoint-model NAME")
        return str(data[0]["id"])

    def _body(self, prompt: Prompt, params: SamplingParams) -> tuple[str, dict]:
        body = {"model": self.model, "max_tokens": params.max_tokens, "temperature": params.temperature,
                "top_p": params.top_p}
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if isinstance(prompt, str):
            return "/completions", {**body, "prompt": prompt}
        return "/chat/completions", {**body, "messages": prompt}

    # ---- the Engine operations ------------------------------------------------------------------------
    def _one(self, prompt: Prompt, params: SamplingParams) -> Completion:
        path, body = self._body(prompt, params)
        data = self._request("POST", path, body)
        try:
            choice = data["choices"][0]
            text = choice["text"] if path == "/completions" else choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise UserError(f"endpoint {self.url}{path} answered without choices[0] text") from None
        usage = data.get("usage") or {}
        return Completion(text=text or "", prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", 0)),
                          finish_reason=choice.get("finish_reason") or "stop")

    def generate(self, prompts: list[Prompt], params: SamplingParams | None = None) -> list[Completion]:
        params = params or SamplingParams()
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda p: self._one(p, params), prompts))

    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[StreamEvent]:
        params = params or SamplingParams()
        path, body = self._body(prompt, params)
        body["stream"] = True
        count, reason = 0, None
        try:
            with self.client.stream("POST", path, json=body) as resp:
                if resp.status_code >= 400:
                    raise UserError(f"endpoint {self.url}{path} answered {resp.status_code}")
                for event in iter_events(resp.iter_bytes()):
                    choice = (event.get("choices") or [{}])[0]
                    delta = choice.get("text") if path == "/completions" else (choice.get("delta") or {}).get("content")
                    reason = choice.get("finish_reason") or reason
                    if delta:
                        count += 1
                        yield StreamEvent(delta, completion_tokens=count)
        except self._httpx.HTTPError as e:
            raise UserError(f"stream from {self.url}{path} failed: {e}") from None
        yield StreamEvent("", finish_reason=reason or "stop", completion_tokens=count)

    def _score_one(self, ctx: str, cont: str) -> Score:
        full = ctx + cont
        data = self._request("POST", "/completions", {"model": self.model, "prompt": full, "max_tokens": 1,
                                                       "temperature": 0.0, "echo": True, "logprobs": 1})
        lp = ((data.get("choices") or [{}])[0]).get("logprobs") or {}
        tokens, values, offsets = lp.get("tokens"), lp.get("token_logprobs"), lp.get("text_offset")
        if not tokens or values is None or offsets is None:
            raise UserError(f"endpoint {self.url} does not return prompt logprobs (completions with echo and "
                            "logprobs); score-based tasks (mc, perplexity, retrieval, classify by score) need them")
        top = lp.get("top_logprobs") or [None] * len(tokens)
        total, n, greedy = 0.0, 0, True
        for i, (tok, val, start) in enumerate(zip(tokens, values, offsets)):
            end = offsets[i + 1] if i + 1 < len(offsets) else len(full) + 1
            in_cont = len(ctx) <= start < len(full) or start < len(ctx) < end  # or straddles the boundary
            if not in_cont or val is None:
                continue  # context tokens, the generated token, and the unscored first token
            total += float(val)
            n += 1
            alts = top[i] or {}
            greedy = greedy and bool(alts) and max(alts, key=alts.get) == tok
        return Score(logprob=total, num_tokens=n, is_greedy=greedy)

    def score(self, requests: list[tuple[str, str]]) -> list[Score]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda r: self._score_one(*r), requests))

    def close(self) -> None:
        self.client.close()
