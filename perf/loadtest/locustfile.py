"""Locust users for an OpenAI-compatible server: chat, completions and streaming chat with a TTFT metric.

    locust -f perf/loadtest/locustfile.py --host http://127.0.0.1:8000                  # web UI on :8089
    locust -f perf/loadtest/locustfile.py --host http://127.0.0.1:8000 --headless -u 8 -r 4 -t 60s
    lifecycle loadtest --endpoint http://127.0.0.1:8000 --users 8 --spawn-rate 4 --duration 60s

Options (command line, the web UI, or environment variables LOCUST_<NAME>):
  --model            served model name (default: the first in /v1/models)
  --api-key-env      env var holding the API key, sent as `Authorization: Bearer KEY`
  --task-weights     chat=3,completion=2,stream=1 (relative frequency of each request kind)
  --prompt-seed      seed of the prompt mix (user i uses seed + i)
  --max-tokens       max_tokens of every request
  --prompts-file     JSONL of {"prompt"} / {"messages"} lines instead of the built-in prompts
  --prompt-set       built-in prompts: arith (sums, for the arithmetic demo), generic (multilingual chats and
                     texts from lifecycle.data.generic) or auto (default: arith when the served model name is
                     a local artifact of the arithmetic lineage, else generic)
Streaming requests report two entries: "stream chat" (to the last byte) and "TTFT stream chat"
(request sent -> first chunk with text), so percentiles of both appear in every Locust report.
Needs locust and the llm-lifecycle package importable (its stream parser, lifecycle.sse, is stdlib only;
the generic set and `auto` read its prompt data, pure Python too).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
import time

from locust import HttpUser, between, events, task

from lifecycle.sse import iter_events

_user_ids = itertools.count()


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--model", default="", env_var="LOCUST_MODEL", include_in_web_ui=True,
                        help="served model name (default: first in /v1/models)")
    parser.add_argument("--api-key-env", default="", env_var="LOCUST_API_KEY_ENV", include_in_web_ui=True,
                        help="env var holding the API key")
    parser.add_argument("--task-weights", default="chat=3,completion=2,stream=1", env_var="LOCUST_TASK_WEIGHTS",
                        include_in_web_ui=True, help="relative weights: chat=3,completion=2,stream=1")
    parser.add_argument("--prompt-seed", type=int, default=0, env_var="LOCUST_PROMPT_SEED", include_in_web_ui=True,
                        help="seed of the prompt mix")
    parser.add_argument("--max-tokens", type=int, default=16, env_var="LOCUST_MAX_TOKENS", include_in_web_ui=True,
                        help="max_tokens per request")
    parser.add_argument("--prompts-file", default="", env_var="LOCUST_PROMPTS_FILE", include_in_web_ui=True,
                        help="JSONL of {'prompt'} or {'messages'}")
    parser.add_argument("--prompt-set", default="auto", choices=["auto", "arith", "generic"],
                        env_var="LOCUST_PROMPT_SET", include_in_web_ui=True,
                        help="built-in prompts: arith (sums), generic, or auto (from the served model)")


def parse_weights(text: str) -> dict[str, int]:
    weights = {"chat": 0, "completion": 0, "stream": 0}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, _, v = part.partition("=")
        if k not in weights or not v.isdigit():
            raise ValueError(f"--task-weights: '{part}' is not chat|completion|stream=INT")
        weights[k] = int(v)
    if not any(weights.values()):
        raise ValueError("--task-weights: at least one weight must be > 0")
    return weights


def builtin_prompt(rng: random.Random) -> tuple[str, list[dict]]:
    """(completion prompt, chat messages) for one random sum."""
    a, b = rng.randrange(100), rng.randrange(100)
    return f"{a}+{b}=", [{"role": "user", "content": f"What is {a}+{b}?"}]


COMPLETION_CHARS = 64  # generic completion prompts: the opening of a text (fits a small model's context)


@functools.lru_cache(maxsize=1)
def _generic_pool() -> tuple[list[str], list[list[dict]]]:
    from lifecycle.data.generic import cut, records

    return ([cut(r["text"], COMPLETION_CHARS) for r in records("texts")], [r["messages"] for r in records("chats")])


def generic_prompt(rng: random.Random) -> tuple[str, list[dict]]:
    """(completion prompt, chat messages) from the built-in generic set, drawn independently."""
    texts, chats = _generic_pool()
    return rng.choice(texts), [dict(m) for m in rng.choice(chats)]


@functools.lru_cache(maxsize=8)
def resolve_prompt_set(choice: str, model: str) -> str:
    """arith | generic; 'auto' asks lifecycle's task profile of the served model name (generic if unknown)."""
    if choice in ("arith", "generic"):
        return choice
    try:
        from perf.prompts import choose_kind
    except ImportError:
        return "generic"
    return choose_kind("auto", model or None)


def _load_file(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class OpenAIUser(HttpUser):
    """One simulated client. Think time 0.1-0.5 s; each task picks a request kind by weight."""

    wait_time = between(0.1, 0.5)

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.uid = next(_user_ids)
        self.rng = random.Random((getattr(opts, "prompt_seed", 0) or 0) + self.uid)
        key_env = getattr(opts, "api_key_env", "") or ""
        key = os.environ.get(key_env, "") if key_env else ""
        if key:
            self.client.headers["Authorization"] = f"Bearer {key}"
        self.max_tokens = getattr(opts, "max_tokens", 16) or 16
        w = parse_weights(getattr(opts, "task_weights", "") or "chat=3,completion=2,stream=1")
        self.kinds = [k for k, n in w.items() for _ in range(n)]
        path = getattr(opts, "prompts_file", "") or ""
        self.file_prompts = _load_file(path) if path else []
        self.model = getattr(opts, "model", "") or ""
        if not self.model:
            with self.client.get("/v1/models", name="/v1/models", catch_response=True) as r:
                try:
                    self.model = r.json()["data"][0]["id"]
                except Exception:
                    r.failure(f"cannot read the model list: HTTP {r.status_code}")
                    self.model = "unknown"
        kind = resolve_prompt_set(getattr(opts, "prompt_set", "") or "auto", self.model)
        self.builtin = generic_prompt if kind == "generic" else builtin_prompt

    def _prompt(self) -> tuple[str, list[dict]]:
        if self.file_prompts:
            item = self.rng.choice(self.file_prompts)
            if "messages" in item:
                return item["messages"][-1]["content"], item["messages"]
            return item["prompt"], [{"role": "user", "content": item["prompt"]}]
        return self.builtin(self.rng)

    @task
    def request(self) -> None:
        kind = self.rng.choice(self.kinds)
        text, messages = self._prompt()
        body = {"model": self.model, "max_tokens": self.max_tokens, "temperature": 0}
        if kind == "completion":
            self._post("/v1/completions", body | {"prompt": text}, "completion")
        elif kind == "chat":
            self._post("/v1/chat/completions", body | {"messages": messages}, "chat")
        else:
            self._stream(body | {"messages": messages, "stream": True})

    def _post(self, path: str, body: dict, name: str) -> None:
        with self.client.post(path, json=body, name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:120]}")
            elif not r.json().get("choices"):
                r.failure("no choices in the response")

    def _stream(self, body: dict) -> None:
        """Streamed chat; fires a custom 'TTFT' request event at the first text chunk."""
        t0 = time.perf_counter()
        first = None
        with self.client.post("/v1/chat/completions", json=body, name="stream chat", stream=True,
                              catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
                return
            for ev in iter_events(r.iter_content(chunk_size=None)):
                if "error" in ev:
                    r.failure(f"stream error: {ev['error'].get('message', '')[:120]}")
                    return
                delta = (ev.get("choices") or [{}])[0].get("delta") or {}
                if first is None and delta.get("content"):
                    first = time.perf_counter()
                    self.environment.events.request.fire(
                        request_type="TTFT", name="TTFT stream chat", response_time=1000 * (first - t0),
                        response_length=0, exception=None, context={})
            if first is None:
                r.failure("the stream carried no text")
