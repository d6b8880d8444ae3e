"""`lifecycle serve` on Ray Serve, as a user runs it: a subprocess on 127.0.0.1, the openai client.

One Ray cluster for the module (started by the CLI with a private temp dir, 2 CPUs, 100 MB object
store); the last test stops it with SIGTERM and checks that every process it started is gone.

    python -m pytest tests/test_serve_ray.py -q
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

CHAT = [{"role": "user", "content": "What is 12+34?"}]
STARTUP_S = 150


def _children(pid: int) -> dict[int, str]:
    """All descendants of pid -> their command line (psutil)."""
    import psutil

    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found[child.pid] = " ".join(child.cmdline())
        except psutil.Error:  # exited meanwhile
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_server(base_artifact):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    log = open(Path(tmp) / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifecycle.cli", "serve", "--model", str(base_artifact.path), "--model", "mock",
         "--port", str(port), "--set", f"ray_temp_dir={tmp}", "--set", "ray_num_cpus=2",
         "--set", "object_store_mb=100", "--set", "num_cpus=0.5", "--set", "max_tokens_limit=128",
         "--set", "startup_timeout_s=120"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    try:
        while True:
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Ray server did not start:\n" + (Path(tmp) / "serve.log").read_text()[-3000:])
            time.sleep(0.5)
        yield {"url": url, "proc": proc, "tmp": tmp}
    finally:
        if proc.poll() is None:  # the shutdown test did not run: clean up anyway
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def client(ray_server):
    return openai.OpenAI(base_url=ray_server["url"] + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_chat_and_completion_through_ray(client, hf_engine):
    from lifecycle.engine import SamplingParams

    r = client.chat.completions.create(model="tiny-arith", messages=CHAT, max_tokens=12, temperature=0)
    [ref] = hf_engine.generate([CHAT], SamplingParams(max_tokens=12))
    assert r.choices[0].message.content == ref.text
    assert r.usage.prompt_tokens == ref.prompt_tokens and r.usage.completion_tokens == ref.completion_tokens
    c = client.completions.create(model="mock", prompt=["a b", "c"], max_tokens=2, n=2)
    assert [x.text for x in c.choices] == [" a b", " a b", " c c", " c c"]


def test_streaming_through_ray(client):
    kw = dict(model="tiny-arith", messages=CHAT, max_tokens=12, temperature=0)
    full = client.chat.completions.create(**kw).choices[0].message.content
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full
    assert chunks[-1].usage.completion_tokens > 0
    long = list(client.completions.create(model="mock", prompt="x", max_tokens=100, stream=True))
    assert "".join(c.choices[0].text for c in long) == " x" * 100
    assert len(long) < 50  # coalesced: far fewer SSE events than tokens


def test_several_models_and_container_contract(ray_server, client):
    assert sorted(m.id for m in client.models.list().data) == ["mock", "tiny-arith"]
    url = ray_server["url"]
    assert httpx.get(url + "/ping").status_code == 200
    r = httpx.post(url + "/invocations", json={"messages": CHAT, "max_tokens": 4, "temperature": 0})
    assert r.status_code == 200 and r.json()["model"] == "tiny-arith"


def test_errors_through_ray(ray_server, client):
    url = ray_server["url"]
    for body, status in [(b"{", 400), (b'{"model": "zzz", "prompt": "a"}', 404),
                         (b'{"model": "mock", "prompt": "a", "temperature": -1}', 400),
                         (b'{"model": "mock", "prompt": "a", "max_tokens": 129}', 400),
                         (b'{"model": "mock", "prompt": ["a", 3]}', 400)]:
        r = httpx.post(url + "/v1/completions", content=body)
        assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "param", "code"}
    # the context check runs in the replica; its UserError crosses Ray and is still a 400
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-arith", messages=[{"role": "user", "content": "1+1 " * 200}],
                                       max_tokens=8)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny-arith", messages=[{"role": "user", "content": "1+1 " * 200}],
                                       max_tokens=8, stream=True)
    assert httpx.post(url + "/v1/completions", json={"model": "mock", "prompt": "fail", "max_tokens": 1}).status_code == 500
    assert client.completions.create(model="mock", prompt="fine", max_tokens=1).choices[0].text == " fine"


def test_dynamic_batching_in_replica(ray_server, client):
    def one():
        client.completions.create(model="tiny-arith", prompt="12+34=", max_tokens=16, temperature=0)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    text = httpx.get(ray_server["url"] + "/metrics").text
    values = {ln.split("{")[0]: float(ln.split()[-1]) for ln in text.splitlines() if 'model="tiny-arith"' in ln
              and ln.startswith("lifecycle_engine_")}
    assert values["lifecycle_engine_requests_total"] >= 16
    assert values["lifecycle_engine_calls_total"] < values["lifecycle_engine_requests_total"]  # batches of > 1


def test_replica_restarts_after_its_process_is_killed(ray_server, client):
    def replicas() -> dict[int, str]:
        return {p: c for p, c in _children(ray_server["proc"].pid).items() if c.startswith("ray::ServeReplica:lifecycle:model-mock")}

    [victim] = replicas()
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 90
    statuses = []
    while time.monotonic() < deadline:
        try:  # Serve may hold a request until the new replica is up
            r = httpx.post(ray_server["url"] + "/v1/completions", json={"model": "mock", "prompt": "back", "max_tokens": 1},
                           timeout=30)
            statuses.append(r.status_code)
        except httpx.TimeoutException:
            statuses.append("timeout")
        if statuses[-1] == 200 and set(replicas()) - {victim}:
            break
        time.sleep(0.5)
    assert statuses[-1] == 200, statuses
    assert victim not in replicas() and replicas()
    # while it restarts: held, or a retryable 503; never a 500
    assert all(s in (200, 503, "timeout") for s in statuses), statuses
    # the other model never noticed
    assert client.chat.completions.create(model="tiny-arith", messages=CHAT, max_tokens=2).choices


def test_zz_clean_shutdown_leaves_no_processes(ray_server):
    proc = ray_server["proc"]
    started = _children(proc.pid)
    assert any("raylet" in c for c in started.values()) and any("gcs_server" in c for c in started.values())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in started):
        time.sleep(0.5)
    left = {p: c[:80] for p, c in started.items() if _alive(p)}
    assert not left, left
    with pytest.raises(httpx.TransportError):
        httpx.get(ray_server["url"] + "/health", timeout=2)
