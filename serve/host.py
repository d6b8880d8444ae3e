"""One loaded model inside a server process: validation, batched generate, coalesced streaming.

Both backends use it: `serve.local` wraps it with an asyncio batcher, `serve.ray_backend` puts it in a
Ray Serve replica and batches with `@serve.batch`. The Engine's calls are blocking, so generate runs on
one worker thread per model (batches are the parallelism) and each stream pumps its engine iterator
from its own thread into the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import AsyncIterator, Awaitable, Callable

from lifecycle.engine import Completion, Engine, Prompt, SamplingParams
from lifecycle.errors import UserError

log = logging.getLogger("serve.host")


def parse_model_spec(spec: str) -> dict:
    """`DIR`, `NAME=DIR`, `mock` or `NAME=mock` -> {"name", "path"}; the name defaults to the artifact's."""
    name, _, path = spec.partition("=") if "=" in spec else ("", "", spec)
    if not path:
        raise UserError(f"--model expects DIR or NAME=DIR, got {spec!r}")
    if path == "mock":
        return {"name": name or "mock", "path": "mock"}
    from lifecycle.models import resolve

    art = resolve(path, verify=False)
    return {"name": name or art.name, "path": str(art.path.resolve())}


def load_model(spec: dict, threads: int = 1) -> Engine:
    """Load the engine for a model spec. trust_remote_code stays off: only registered engines run."""
    if spec["path"] == "mock":
        from serve.mock import MockEngine

        return MockEngine(**spec.get("mock", {}))
    from lifecycle.engine import load_engine

    return load_engine(spec["path"], threads=threads)


def _params_key(p: SamplingParams) -> str:
    """Requests with equal keys may share one engine call: every field counts, new ones included."""
    return json.dumps(dataclasses.asdict(p), sort_keys=True, default=repr)


class EngineHost:
    """Validation, batching and streaming around one Engine. `submit` is set by the backend.

    `max_queued` bounds the work admitted beyond one full batch: with `max_batch_size + max_queued`
    completions (or streams) in flight, a new request gets a 429 with Retry-After. None admits all (the
    Ray backend bounds its queue in Serve's handle instead). `close` waits for every engine call and
    stream thread to leave the engine before closing it: a native engine (llama.cpp) freed under a
    running thread crashes the process.
    """

    def __init__(self, engine: Engine, name: str, max_batch_size: int = 16, stream_interval_s: float = 0.02,
                 max_queued: int | None = None):
        self.engine, self.name = engine, name
        self.can_batch = getattr(engine, "max_batch_size", 1) > 1 and max_batch_size > 1
        self.stream_interval_s = stream_interval_s
        self.capacity = None if max_queued is None else max(max_batch_size, 1) + max(max_queued, 0)
        self.in_flight = 0  # admitted completions and streams not yet finished
        self.rejected = 0
        self._active = 0  # threads inside the engine right now (generate calls and stream pumps)
        self._idle = threading.Condition()
        self._halts: set[threading.Event] = set()
        self._closing = self._closed = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"generate-{name}")
        self.submit: Callable[[Prompt, SamplingParams], Awaitable] = self.run_one
        self.engine_calls = 0  # generate calls made; with `requests`, gives the mean batch size
        self.requests = 0
        self.batch_seconds = 0.0  # moving average of one batch's wall time

    def info(self) -> dict:
        return {"name": self.name, "context_length": self.engine.context_length, "can_batch": self.can_batch,
                "engine_calls": self.engine_calls, "requests": self.requests, "in_flight": self.in_flight,
                "rejected": self.rejected, "engine_threads": self._active}

    # ---- admission -----------------------------------------------------------------------------------
    def retry_after_s(self) -> int:
        """Seconds until the queue has likely moved on: the batches ahead of a new request, at least 1."""
        batches = self.in_flight / max(self.capacity or 1, 1) + 1
        return int(min(60, max(1, math.ceil(self.batch_seconds * batches))))

    @contextmanager
    def admit(self, weight: int = 1):
        """Hold `weight` slots of the model's queue; 429 when they are taken (a lone request always fits)."""
        if self._closing:
            from serve.protocol import APIError

            raise APIError(503, f"the model '{self.name}' is shutting down", type="server_error", code="unavailable")
        if self.capacity is not None and self.in_flight and self.in_flight + weight > self.capacity:
            from serve.protocol import APIError

            self.rejected += 1
            wait = self.retry_after_s()
            raise APIError(429, f"the model '{self.name}' has {self.in_flight} requests in flight (limit "
                                f"{self.capacity}); retry after {wait}s", type="rate_limit_error",
                           code="queue_full", headers={"Retry-After": str(wait)})
        self.in_flight += weight
        try:
            yield
        finally:
            self.in_flight -= weight

    @contextmanager
    def _in_engine(self):
        """Count a thread that is inside the engine, so that `close` can wait for it."""
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    # ---- validation ----------------------------------------------------------------------------------
    def prompt_tokens(self, prompt: Prompt, params: SamplingParams) -> int:
        """Count the prompt's tokens and refuse a prompt that leaves no room for max_tokens."""
        try:
            n = self.engine.count_tokens(prompt)
        except NotImplementedError:
            return 0
        limit = self.engine.context_length
        if limit and n + params.max_tokens > limit:
            raise UserError(f"this model's context length is {limit} tokens; the prompt has {n} and "
                            f"max_tokens is {params.max_tokens}: shorten the prompt or lower max_tokens")
        return n

    # ---- generate ------------------------------------------------------------------------------------
    def generate_batch(self, prompts: list[Prompt], params: list[SamplingParams]) -> list:
        """Blocking: one engine call per group of equal params; a failing group is retried per item."""
        results: list = [None] * len(prompts)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(params):
            # a seeded sampled request runs alone so that its seed reproduces its output
            key = (i,) if p.seed is not None and p.temperature > 0 else _params_key(p)
            groups.setdefault(key, []).append(i)
        self.requests += len(prompts)
        self.engine_calls += len(groups)
        with self._in_engine():
            return self._generate_groups(prompts, params, groups, results)

    def _generate_groups(self, prompts: list[Prompt], params: list[SamplingParams], groups: dict,
                         results: list) -> list:
        for idx in groups.values():
            try:
                outs = self.engine.generate([prompts[i] for i in idx], params[idx[0]])
                for i, out in zip(idx, outs):
                    results[i] = out
            except Exception:
                for i in idx:
                    try:
                        results[i] = self.engine.generate([prompts[i]], params[i])[0]
                    except Exception as e:  # returned, not raised: one bad request must not fail its batch
                        results[i] = e
        return results

    async def run_batch(self, prompts: list[Prompt], params: list[SamplingParams]) -> list:
        start = time.monotonic()
        out = await asyncio.get_running_loop().run_in_executor(self._pool, self.generate_batch, prompts, params)
        self.batch_seconds = 0.8 * self.batch_seconds + 0.2 * (time.monotonic() - start)
        return out

    async def run_one(self, prompt: Prompt, params: SamplingParams):
        return (await self.run_batch([prompt], [params]))[0]

    async def complete(self, prompts: list[Prompt], params: SamplingParams, n: int = 1) -> tuple[list[Completion], int]:
        """All choices for a request (n per prompt, prompt-major) and the prompt token count."""
        prompt_tokens = sum(self.prompt_tokens(p, params) for p in prompts)
        with self.admit(len(prompts) * n):
            outs = await asyncio.gather(*(self.submit(p, params) for p in prompts for _ in range(n)))
        for o in outs:
            if isinstance(o, Exception):
                raise o
        return list(outs), prompt_tokens

    # ---- stream --------------------------------------------------------------------------------------
    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[dict]:
        """First {"prompt_tokens": n} (after validation), then coalesced {"text", "finish_reason", "tokens",
        "logprobs"} (the merged events' token logprobs when the request asked for them).

        Events that arrive within `stream_interval_s` of the last one sent are merged, so a fast model
        sends a few chunks instead of one per token. The first chunk and the end are never held back.
        """
        prompt_tokens = self.prompt_tokens(prompt, params)
        with self.admit():
            yield {"prompt_tokens": prompt_tokens}
            async for event in self._pump(prompt, params):
                yield event

    async def _pump(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[dict]:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        halt = threading.Event()
        self._halts.add(halt)

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody reads any more
                halt.set()

        def pump() -> None:
            # a client that hung up sets `halt`; the engine is asked for at most one more token after that
            with self._in_engine():
                try:
                    it = self.engine.stream(prompt, params)
                    try:
                        for ev in it:
                            put(ev)
                            if halt.is_set():
                                break
                    finally:
                        it.close()
                except Exception as e:
                    put(e)
                finally:
                    put(None)
                    self._halts.discard(halt)

        threading.Thread(target=pump, daemon=True, name=f"stream-{self.name}").start()
        last_sent = -1.0
        try:
            done = False
            while not done:
                items = [await q.get()]
                # gather more events until the interval since the last send is over; the end never waits
                while items[-1] is not None and not isinstance(items[-1], Exception):
                    if not q.empty():
                        items.append(q.get_nowait())
                        continue
                    left = last_sent + self.stream_interval_s - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        items.append(await asyncio.wait_for(q.get(), left))
                    except asyncio.TimeoutError:
                        break
                text, reason, tokens, lps = [], None, 0, []
                for ev in items:
                    if ev is None:
                        done = True
                        break
                    if isinstance(ev, Exception):
                        raise ev
                    text.append(ev.text)
                    reason = ev.finish_reason or reason
                    tokens = ev.completion_tokens or tokens
                    lps.extend(ev.logprobs or [])
                if text or reason or lps:
                    yield {"text": "".join(text), "finish_reason": reason, "tokens": tokens,
                           "logprobs": lps if params.logprobs is not None else None}
                    last_sent = time.monotonic()
        finally:
            halt.set()

    def close(self, timeout_s: float = 30.0) -> bool:
        """Stop streams, let the running engine call finish, then close the engine. False (and the engine
        left open) if a thread is still inside it after `timeout_s`: leaking beats a native crash."""
        if self._closed:
            return True
        self._closing = True
        for halt in list(self._halts):
            halt.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._idle:
            idle = self._idle.wait_for(lambda: self._active == 0, timeout_s)
        if not idle:
            log.warning("%s: %d engine threads still running after %.0fs; leaving the engine open",
                        self.name, self._active, timeout_s)
            return False
        self._closed = True
        self.engine.close()
        return True


class Batcher:
    """Dynamic batching for the local backend: requests queued while a batch runs form the next batch.

    With `wait_s=0` a lone request starts at once (no added latency at concurrency 1); under load the
    queue fills during each engine call, which is where batching pays off.
    """

    def __init__(self, fn: Callable[[list, list], Awaitable[list]], max_batch_size: int = 16, wait_s: float = 0.0):
        self.fn, self.max_batch_size, self.wait_s = fn, max_batch_size, wait_s
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    async def __call__(self, prompt: Prompt, params: SamplingParams):
        if self._queue is None:
            self._queue = asyncio.Queue()
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((prompt, params, fut))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await fut

    async def _run(self) -> None:
        q = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = [await q.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.max_batch_size:
                if not q.empty():
                    batch.append(q.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(q.get(), left))
                except asyncio.TimeoutError:
                    break
            live = [b for b in batch if not b[2].done()]  # skip requests whose client gave up
            if not live:
                continue
            try:
                results = await self.fn([b[0] for b in live], [b[1] for b in live])
            except Exception as e:
                results = [e] * len(live)
            for (_, _, fut), r in zip(live, results):
                if not fut.done():
                    fut.set_result(r)
