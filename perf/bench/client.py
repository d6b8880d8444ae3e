"""The benchmark client: streaming requests from c concurrent workers, in its own process.

    python -m perf.bench.client spec.json records.json

`spec.json` holds {"url", "model", "concurrency", "prompts", "api_key_env", "warmup", "timeout_s"}.
Each worker takes the next prompt until all are sent (a closed loop, as vLLM's benchmark with
max_concurrency); `records.json` gets {"wall_s", "records": [RequestRecord dicts]}. One aiohttp event
loop drives all workers: a thread per request would make the client the bottleneck on a small box.
The runner starts this as a subprocess so the client never shares a CPU-bound interpreter with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from lifecycle.atomic import write_text_atomic
from lifecycle.sse import aiter_events
from perf.bench.metrics import RequestRecord


def request_body(model: str, item: dict) -> tuple[str, dict]:
    """(path, body) for one prompt item: chat when it has messages, else a completion."""
    body = {"model": model, "max_tokens": item.get("max_tokens", 16), "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    if "messages" in item:
        return "/v1/chat/completions", body | {"messages": item["messages"]}
    return "/v1/completions", body | {"prompt": item["prompt"]}


def _chunk_text(ev: dict) -> str:
    if not ev.get("choices"):
        return ""
    c = ev["choices"][0]
    return c.get("text") or (c.get("delta") or {}).get("content") or ""


async def one_request(session, url: str, model: str, item: dict, timeout_s: float) -> RequestRecord:
    import aiohttp

    path, body = request_body(model, item)
    rec = RequestRecord()
    t0 = time.perf_counter()
    try:
        async with session.post(url + path, json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            if r.status != 200:
                rec.error = f"HTTP {r.status}: {(await r.text())[:200]}"
            else:
                async for ev in aiter_events(r.content.iter_any()):
                    if "error" in ev:
                        rec.error = f"stream error: {ev['error'].get('message', ev['error'])}"[:200]
                    elif ev.get("usage"):
                        rec.output_tokens = ev["usage"]["completion_tokens"]
                        rec.prompt_tokens = ev["usage"]["prompt_tokens"]
                    if _chunk_text(ev):
                        rec.chunk_times.append(time.perf_counter() - t0)
                if not rec.error and not rec.output_tokens:
                    rec.output_tokens = len(rec.chunk_times)  # no usage chunk: count chunks
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        rec.error = f"{type(e).__name__}: {e}"[:200]
    rec.e2e = time.perf_counter() - t0
    return rec


async def run(spec: dict) -> dict:
    import aiohttp

    url, model, c = spec["url"].rstrip("/"), spec["model"], int(spec["concurrency"])
    prompts, timeout_s = spec["prompts"], float(spec.get("timeout_s", 120))
    key = os.environ.get(spec.get("api_key_env") or "", "")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=c)) as session:
        for item in prompts[: int(spec.get("warmup", 0))]:
            await one_request(session, url, model, item, timeout_s)
        queue = list(enumerate(prompts))
        records: list = [None] * len(prompts)

        async def worker() -> None:
            while queue:
                i, item = queue.pop(0)
                records[i] = await one_request(session, url, model, item, timeout_s)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        wall = time.perf_counter() - start
    return {"wall_s": wall, "records": [r.to_dict() for r in records]}


def main(argv: list[str]) -> None:
    spec_path, out_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    result = asyncio.run(run(spec))
    write_text_atomic(out_path, json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
