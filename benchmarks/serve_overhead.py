"""Serving overhead, side by side in one run: in-process Engine vs the local server vs Ray Serve.

    python benchmarks/serve_overhead.py                       # built-in model, concurrency 1, 4, 16
    python benchmarks/serve_overhead.py --seconds 3 --json out.json

Every mode runs the same request (a raw completion prompt, greedy, `--max-tokens`) from `c` client
threads in a closed loop for `--seconds` after a warm-up. Rows:
  in-process         c threads calling engine.generate([prompt]) (no server, no batching)
  in-process stream  c threads iterating engine.stream(prompt) (the streaming baseline)
  in-process batch   one thread calling engine.generate([prompt] * c) (the batching ceiling)
  local / local-sse  `lifecycle serve --engine local` in a subprocess; non-streaming / streaming
  ray / ray-sse      `lifecycle serve` (Ray Serve) in a subprocess; non-streaming / streaming
Metric convention (vLLM benchmarks/serve.py): E2E latency = request sent -> last byte; TTFT = request
sent -> first streamed token; throughput = completed requests (and output tokens) / wall time.
The GGUF engine and llama_cpp.server peer rows wait for the quantization layer (not run here).
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
            "lat_ms": 1000 * statistics.mean(lat), "p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))],
            "ttft_ms": 1000 * statistics.mean(ttft) if ttft else None}


def _http_loop(url: str, model: str, max_tokens: int, stream: bool, c: int, seconds: float) -> dict:
    """c concurrent aiohttp clients on one event loop (a thread per client would make the client the
    bottleneck: 16 Python threads on httpx used more CPU than the server they measured)."""
    import asyncio

    import aiohttp

    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    lat, ttft, tokens = [], [], [0]

    async def one(session) -> None:
        t0 = time.perf_counter()
        first, n = None, 0
        async with session.post(url + "/v1/completions", json=body) as r:
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
    for ev in engine.stream(PROMPT, params):
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
    proc = subprocess.Popen([sys.executable, "-m", "lifecycle.cli", "serve", *args, "--port", str(port)],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start; see {log}")
        time.sleep(0.5)


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
    ap.add_argument("--modes", default="in-process,in-process stream,in-process batch,local,local-sse,ray,ray-sse")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    conc = [int(c) for c in a.concurrency.split(",")]
    modes = a.modes.split(",")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tmp = Path(tempfile.mkdtemp(prefix="sb", dir="/tmp"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    rows: list[dict] = []

    def record(mode: str, c: int, res: dict) -> None:
        rows.append({"mode": mode, "c": c, **res})
        ttft = f"{res['ttft_ms']:.1f}" if res["ttft_ms"] is not None else "-"
        print(f"{mode:17s} c={c:<3d} {res['tok_s']:8.1f} tok/s {res['req_s']:7.1f} req/s "
              f"lat {res['lat_ms']:7.1f} ms p95 {res['p95_ms']:7.1f} ms ttft {ttft}", flush=True)

    from lifecycle.engine import SamplingParams, load_engine

    engine = load_engine(a.model, threads=1)
    params = SamplingParams(max_tokens=a.max_tokens, temperature=0)
    engine.generate([PROMPT] * 4, params)  # warm-up
    runners = {
        "in-process": lambda c: _closed_loop(c, a.seconds, lambda s: (engine.generate([PROMPT], params)[0].completion_tokens, None)),
        "in-process stream": lambda c: _closed_loop(c, a.seconds, lambda s: _stream_once(engine, params)),
        "in-process batch": lambda c: _batched(_closed_loop(1, a.seconds, lambda s: (
            sum(x.completion_tokens for x in engine.generate([PROMPT] * c, params)), None)), c),
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
    for mode in ("local", "ray", "in-process batch"):
        checks.append((f"{mode} c={conc[-1]} / c={conc[0]}", ratio((mode, conc[-1]), (mode, conc[0])), 4.0))
    for label, value, goal in checks:
        if value is not None:
            print(f"  {label:36s} {value:5.2f}x  (goal >= {goal}x: {'met' if value >= goal else 'missed'})")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "ratios": {k: v for k, v, _ in checks}}, indent=2))


if __name__ == "__main__":
    main()
