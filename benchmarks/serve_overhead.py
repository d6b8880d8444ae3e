"""Serving overhead, side by side in one run: in-process Engine vs the local server vs Ray Serve.

    python benchmarks/serve_overhead.py                       # built-in model, concurrency 1, 4, 16
    python benchmarks/serve_overhead.py --seconds 3 --json out.json
    python benchmarks/serve_overhead.py --gguf q4_0 --seconds 2 --rounds 3 --vary-prompt   # ~100M random Llama, GGUF

Every mode runs the same request (a raw completion prompt, greedy, `--max-tokens`) from `c` client
threads in a closed loop for `--seconds` after a warm-up. Rows:
  in-process         c threads calling engine.generate([prompt]) (no server, no batching)
  in-process stream  c threads iterating engine.stream(prompt) (the streaming baseline)
  in-process batch   one thread calling engine.generate([prompt] * c) (the batching ceiling)
  local / local-sse  `lifecycle serve --engine local` in a subprocess; non-streaming / streaming
  ray / ray-sse      `lifecycle serve` (Ray Serve) in a subprocess; non-streaming / streaming
  llama-cpp / -sse   `python -m llama_cpp.server` on the same model.gguf (the peer; --gguf runs only)
With `--gguf q4_0|q8_0` the model is benchmarks/quant_matrix.py's ~100M random Llama (tiny-arith's tokenizer)
converted by `lifecycle quantize` (cached under --gguf-dir), and the default modes are the in-process GGUF
Engine, the local server and llama_cpp.server. Both servers run one model with 1 thread, n_ctx 512 and
logits_all (llama_cpp.server with --interrupt_requests false, else a waiting request aborts the
running stream), and get the same prompt, max_tokens and client. llama_cpp.server ignores stream_options, so its
streamed token count is the completion_tokens its non-streaming answer reports for the same greedy request.
Metric convention (vLLM benchmarks/serve.py): E2E latency = request sent -> last byte; TTFT = request
sent -> first streamed token; throughput = completed requests (and output tokens) / wall time.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx  # only to poll /health while a server starts

PROMPT = "123456789"  # the built-in model continues this for 16 tokens before EOS
# --vary-prompt: each request takes the next of these (they differ in their first token after BOS), so no
# runtime can reuse the previous request's KV cache for the prompt (llama-cpp-python does, for a shared prefix)
VARIED = [f"{d}{PROMPT[1:]}" for d in "1234567890"]
_prompts = [PROMPT]
_next = iter(range(1 << 62))


def _prompt() -> str:
    return _prompts[next(_next) % len(_prompts)]  # next() on a range iterator is atomic under the GIL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _closed_loop(c: int, seconds: float, one) -> dict:
    """Run `one()` -> (tokens, ttft or None) from c threads for `seconds`; summarize."""
    lat, ttft, tokens = [], [], [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        state = {}
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            n, first = one(state)
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                tokens[0] += n
                if first is not None:
                    ttft.append(first - t0)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _summary(lat, ttft, tokens[0], time.perf_counter() - start)


def _summary(lat: list[float], ttft: list[float], tokens: int, wall: float) -> dict:
    lat = sorted(lat)
    return {"requests": len(lat), "req_s": len(lat) / wall, "tok_s": tokens / wall,
            "lat_ms": 1000 * statistics.mean(lat), "p50_ms": 1000 * statistics.median(lat), "p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))],
            "ttft_ms": 1000 * statistics.mean(ttft) if ttft else None}


def _http_loop(url: str, model: str, max_tokens: int, stream: bool, c: int, seconds: float,
               stream_tokens: dict | None = None) -> dict:
    """c concurrent aiohttp clients on one event loop (a thread per client would make the client the
    bottleneck: 16 Python threads on httpx used more CPU than the server they measured)."""
    import asyncio

    import aiohttp

    body = {"model": model, "max_tokens": max_tokens, "temperature": 0}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    lat, ttft, tokens = [], [], [0]

    async def one(session) -> None:
        t0 = time.perf_counter()
        first, n = None, 0
        prompt = _prompt()
        async with session.post(url + "/v1/completions", json=body | {"prompt": prompt}) as r:
            r.raise_for_status()
            if not stream:
                n = (await r.json())["usage"]["completion_tokens"]
            else:
                async for raw in r.content:
                    line = raw.decode().strip()
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    ev = json.loads(line[6:])
                    if ev.get("usage"):
                        n = ev["usage"]["completion_tokens"]
                    elif first is None and ev["choices"] and ev["choices"][0]["text"]:
                        first = time.perf_counter()
        if stream and not n:  # a server without stream_options: usage (llama_cpp.server)
            n = (stream_tokens or {}).get(prompt, 0)
        lat.append(time.perf_counter() - t0)
        tokens[0] += n
        if first is not None:
            ttft.append(first - t0)

    async def main() -> float:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:
            stop = time.perf_counter() + seconds

            async def worker() -> None:
                while time.perf_counter() < stop:
                    await one(session)

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(c)))
            return time.perf_counter() - start

    wall = asyncio.run(main())
    return _summary(lat, ttft, tokens[0], wall)


def _stream_once(engine, params) -> tuple[int, float | None]:
    first, n = None, 0
    for ev in engine.stream(_prompt(), params):
        if first is None and ev.text:
            first = time.perf_counter()
        n = ev.completion_tokens or n
    return n, first


def _batched(res: dict, c: int) -> dict:
    res["req_s"] *= c  # c requests per engine call
    return res


def _median(results: list[dict]) -> dict:
    """The median of each field over rounds."""
    out = {}
    for k in results[0]:
        vals = [r[k] for r in results if r[k] is not None]
        out[k] = statistics.median(vals) if vals else None
    return out


def _start_server(args: list[str], port: int, env: dict, log: Path, timeout: float = 180) -> subprocess.Popen:
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "lifecycle.cli", "serve", *args, "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    return _wait_http(proc, f"http://127.0.0.1:{port}/health", log, timeout)


def _wait_http(proc: subprocess.Popen, url: str, log: Path, timeout: float = 180) -> subprocess.Popen:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"server did not start; see {log}")
        time.sleep(0.5)


def _start_llama_cpp_server(gguf: Path, port: int, env: dict, log: Path) -> subprocess.Popen:
    """llama-cpp-python's own OpenAI server, configured like our GGUF engine (1 thread, logits_all)."""
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
           "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", "512", "--logits_all", "true", "--verbose", "false",
           "--interrupt_requests", "false"]  # its default (true) lets a waiting request cut off a running stream
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    return _wait_http(proc, f"http://127.0.0.1:{port}/v1/models", log)


def _gguf_artifact(fmt: str, where: Path) -> Path:
    """benchmarks/quant_matrix.py's ~100M random Llama, converted to GGUF once and cached in `where`."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from quant_matrix import random_llama

    from quantize.driver import quantize

    out = where / f"gguf-{fmt}"
    if not (out / "model.gguf").is_file():
        t0 = time.perf_counter()
        quantize(str(random_llama(where / "random-llama")), f"gguf-{fmt}", out, ["eval_items=0", "threads=1"],
                 overwrite=True)
        print(f"built {out} in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def _completion_tokens(url: str, model: str, max_tokens: int) -> dict[str, int]:
    """completion_tokens per prompt (greedy, so a streamed answer has the same count)."""
    out = {}
    for prompt in _prompts:
        r = httpx.post(url + "/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                                      "temperature": 0}, timeout=120)
        r.raise_for_status()
        out[prompt] = r.json()["usage"]["completion_tokens"]
    return out


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-arith")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured time per (mode, concurrency, round)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows medians")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--modes", default="", help="default: in-process,in-process stream,in-process batch,local,"
                    "local-sse,ray,ray-sse; with --gguf: in-process,in-process stream,local,local-sse,llama-cpp,llama-cpp-sse")
    ap.add_argument("--gguf", choices=["q4_0", "q8_0"], help="benchmark a ~100M random Llama in this GGUF type "
                    "(replaces --model) against llama_cpp.server")
    ap.add_argument("--gguf-dir", default="/tmp/serve-overhead-gguf", help="where the GGUF artifact is built and kept")
    ap.add_argument("--vary-prompt", action="store_true", help="rotate over 10 prompts that differ in their "
                    "first token, so no runtime reuses the previous request's prompt KV cache")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    conc = [int(c) for c in a.concurrency.split(",")]
    if a.vary_prompt:
        _prompts[:] = VARIED
    if a.gguf:
        a.model = str(_gguf_artifact(a.gguf, Path(a.gguf_dir)))
    modes = (a.modes or ("in-process,in-process stream,local,local-sse,llama-cpp,llama-cpp-sse" if a.gguf else
                         "in-process,in-process stream,in-process batch,local,local-sse,ray,ray-sse")).split(",")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = Path(tempfile.mkdtemp(prefix="sb", dir="/tmp"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    rows: list[dict] = []

    def record(mode: str, c: int, res: dict) -> None:
        rows.append({"mode": mode, "c": c, **res})
        ttft = f"{res['ttft_ms']:.1f}" if res["ttft_ms"] is not None else "-"
        print(f"{mode:17s} c={c:<3d} {res['tok_s']:8.1f} tok/s {res['req_s']:7.1f} req/s "
              f"lat {res['lat_ms']:7.1f} ms p50 {res['p50_ms']:7.1f} ms p95 {res['p95_ms']:7.1f} ms ttft {ttft}", flush=True)

    from lifecycle.engine import SamplingParams, load_engine

    engine = load_engine(a.model, threads=1)
    params = SamplingParams(max_tokens=a.max_tokens, temperature=0)
    engine.generate([PROMPT] * 4, params)  # warm-up
    runners = {
        "in-process": lambda c: _closed_loop(c, a.seconds, lambda s: (engine.generate([_prompt()], params)[0].completion_tokens, None)),
        "in-process stream": lambda c: _closed_loop(c, a.seconds, lambda s: _stream_once(engine, params)),
        "in-process batch": lambda c: _batched(_closed_loop(1, a.seconds, lambda s: (
            sum(x.completion_tokens for x in engine.generate([_prompt() for _ in range(c)], params)), None)), c),
    }
    procs = []
    servers = [("local", ["--engine", "local"]), ("ray", ["--engine", "ray", "--set", f"ray_temp_dir={tmp}",
                                                            "--set", "object_store_mb=100"])]
    try:
        for name, extra in servers:
            if not any(m in modes for m in (name, name + "-sse")):
                continue
            port = _free_port()
            procs.append(_start_server(["--model", a.model, *extra], port, env, tmp / f"{name}.log"))
            for stream in (False, True):
                run = functools.partial(_http_loop, f"http://127.0.0.1:{port}", Path(a.model).name, a.max_tokens, stream)
                run(2, 1.0)  # warm-up
                runners[name + ("-sse" if stream else "")] = lambda c, run=run: run(c, a.seconds)
        if any(m in modes for m in ("llama-cpp", "llama-cpp-sse")):
            port = _free_port()
            procs.append(_start_llama_cpp_server(Path(a.model) / "model.gguf", port, env, tmp / "llama-cpp.log"))
            url = f"http://127.0.0.1:{port}"
            n_peer = _completion_tokens(url, "model", a.max_tokens)
            n_ours = [x.completion_tokens for x in engine.generate(_prompts, params)]
            print(f"completion tokens per prompt: llama_cpp.server {list(n_peer.values())}, our engine {n_ours}",
                  flush=True)
            for stream in (False, True):
                run = functools.partial(_http_loop, url, "model", a.max_tokens, stream, stream_tokens=n_peer)
                run(2, 1.0)  # warm-up
                runners["llama-cpp" + ("-sse" if stream else "")] = lambda c, run=run: run(c, a.seconds)
        # rounds interleave the modes, so a neighbour's load on a shared machine hits them all alike
        samples: dict[tuple, list[dict]] = {}
        for r in range(a.rounds):
            for c in conc:
                for mode in modes:
                    res = runners[mode](c)
                    samples.setdefault((mode, c), []).append(res)
                    print(f"round {r + 1}/{a.rounds} {mode:17s} c={c:<3d} {res['tok_s']:8.1f} tok/s", flush=True)
    finally:
        for proc in procs:
            _stop(proc)
        engine.close()
    shutil.rmtree(tmp, ignore_errors=True)  # kept when a server failed, for its log
    print()
    for (mode, c), results in samples.items():
        record(mode, c, _median(results))

    by = {(r["mode"], r["c"]): r for r in rows}

    def ratio(a_, b_):
        return by[a_]["tok_s"] / by[b_]["tok_s"] if a_ in by and b_ in by else None

    print("\nratios (output tokens/s):")
    checks = [("local / in-process, c=1", ratio(("local", 1), ("in-process", 1)), 0.9),
              ("local-sse / in-process stream, c=1", ratio(("local-sse", 1), ("in-process stream", 1)), 0.9),
              ("ray / local, c=1", ratio(("ray", 1), ("local", 1)), 0.8)]
    checks += [(f"ray-sse / local-sse, c={c}", ratio(("ray-sse", c), ("local-sse", c)), 0.8) for c in conc]
    for c in conc:
        checks.append((f"local / llama-cpp, c={c}", ratio(("local", c), ("llama-cpp", c)), 1.0))
        checks.append((f"local-sse / llama-cpp-sse, c={c}", ratio(("local-sse", c), ("llama-cpp-sse", c)), 1.0))
        checks.append((f"in-process / llama-cpp, c={c}", ratio(("in-process", c), ("llama-cpp", c)), None))
    for mode in ("local", "ray", "in-process batch") if not a.gguf else ():  # the batching goal is the torch engine's
        checks.append((f"{mode} c={conc[-1]} / c={conc[0]}", ratio((mode, conc[-1]), (mode, conc[0])), 4.0))
    for label, value, goal in checks:
        if value is not None:
            verdict = f"goal >= {goal}x: {'met' if value >= goal else 'missed'}" if goal else "no goal"
            print(f"  {label:36s} {value:5.2f}x  ({verdict})")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "ratios": {k: v for k, v, _ in checks}}, indent=2))


if __name__ == "__main__":
    main()
