"""The OpenAI app on a real local uvicorn server (127.0.0.1, free port), driven by the `openai` client.

    python -m pytest tests/test_serve_local.py -q
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

from lifecycle.engine import SamplingParams
from lifecycle.sse import parse_events
from serve.app import build_app
from serve.host import EngineHost
from serve.local import LocalBackend, ServerThread
from serve.mock import MockEngine

CHAT = [{"role": "user", "content": "What is 12+34?"}]


def _backend(hf_engine, **mock) -> LocalBackend:
    hosts = {"tiny-arith": EngineHost(hf_engine, "tiny-arith"),
             "mock": EngineHost(MockEngine(**mock), "mock", stream_interval_s=0.0)}
    return LocalBackend(hosts)


@pytest.fixture(scope="module")
def server(hf_engine):
    backend = _backend(hf_engine, context_length=64)
    with ServerThread(build_app(backend, {"max_tokens_limit": 100, "max_body_bytes": 20_000})) as srv:
        srv.backend = backend
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def _error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


# ---- the happy paths ---------------------------------------------------------------------------------
@pytest.mark.integration
def test_chat_matches_in_process_engine(client, hf_engine):
    r = client.chat.completions.create(model="tiny-arith", messages=CHAT, max_tokens=12, temperature=0)
    [ref] = hf_engine.generate([CHAT], SamplingParams(max_tokens=12))
    assert r.choices[0].message.content == ref.text
    assert r.choices[0].finish_reason == ref.finish_reason
    assert r.usage.prompt_tokens == hf_engine.count_tokens(CHAT) == ref.prompt_tokens
    assert r.usage.completion_tokens == ref.completion_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model == "tiny-arith" and r.object == "chat.completion"


@pytest.mark.integration
def test_chat_stream_equals_non_stream(client):
    kw = dict(model="tiny-arith", messages=CHAT, max_tokens=12, temperature=0)
    full = client.chat.completions.create(**kw).choices[0]
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.finish_reason
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.integration
def test_completions_prompt_list_and_n(client):
    r = client.completions.create(model="mock", prompt=["a b c", "d"], max_tokens=3, n=2)
    assert [c.text for c in r.choices] == [" a b c", " a b c", " d d d", " d d d"]
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.usage.prompt_tokens == 4 and r.usage.completion_tokens == 12


@pytest.mark.integration
def test_completion_stream_and_stop(client):
    chunks = list(client.completions.create(model="mock", prompt="x y z", max_tokens=6, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == " x y z x y z"
    r = client.completions.create(model="mock", prompt="x y z", max_tokens=6, stop=["z"])
    assert r.choices[0].text == " x y " and r.choices[0].finish_reason == "stop"


@pytest.mark.integration
def test_seed_reproduces_sampling(client):
    kw = dict(model="tiny-arith", prompt="12+34=", max_tokens=8, temperature=1.0, seed=7)
    assert client.completions.create(**kw).choices[0].text == client.completions.create(**kw).choices[0].text


@pytest.mark.integration
def test_models_health_ping(server, client):
    assert sorted(m.id for m in client.models.list().data) == ["mock", "tiny-arith"]
    h = httpx.get(server.url + "/health")
    assert h.status_code == 200 and h.json()["models"] == {"tiny-arith": "ready", "mock": "ready"}
    assert httpx.get(server.url + "/ping").status_code == 200


@pytest.mark.integration
def test_invocations_container_contract(server):
    chat = httpx.post(server.url + "/invocations", json={"messages": CHAT, "max_tokens": 4, "temperature": 0})
    assert chat.status_code == 200 and chat.json()["object"] == "chat.completion"
    comp = httpx.post(server.url + "/invocations", json={"model": "mock", "prompt": "p q", "max_tokens": 2})
    assert comp.status_code == 200 and comp.json()["choices"][0]["text"] == " p q"
    _error(httpx.post(server.url + "/invocations", content=b"{oops"), 400)


@pytest.mark.integration
def test_batching_merges_concurrent_requests(hf_engine):
    mock = MockEngine(delay_s=0.01)
    backend = LocalBackend({"mock": EngineHost(mock, "mock")}, max_batch_size=8)
    with ServerThread(build_app(backend)) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
        threads = [threading.Thread(target=c.completions.create, kwargs=dict(model="mock", prompt="a", max_tokens=4))
                   for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(mock.calls) == 12 and max(mock.calls) > 1


# ---- errors: always 4xx with OpenAI's body, and the server keeps serving ------------------------------
@pytest.mark.parametrize("body, status, param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (b'{"model": "mock"}', 400, "prompt"),
    (b'{"prompt": "a"}', 400, "model"),
    (b'{"model": "nope", "prompt": "a"}', 404, "model"),
    (b'{"model": "mock", "prompt": "a", "max_tokens": "5"}', 400, "max_tokens"),
    (b'{"model": "mock", "prompt": 5}', 400, "prompt"),
    (b'{"model": "mock", "prompt": "a", "temperature": -0.5}', 400, "temperature"),
    (b'{"model": "mock", "prompt": "a", "max_tokens": 101}', 400, "max_tokens"),
    (b'{"model": "mock", "prompt": "a", "max_tokens": 0}', 400, "max_tokens"),
    (b'{"model": "mock", "prompt": "a", "top_p": 0}', 400, "top_p"),
    (b'{"model": "mock", "prompt": "a", "stream": "yes"}', 400, "stream"),
    (b'{"model": "mock", "prompt": "a", "n": 17, "stream": true}', 400, "n"),
])
@pytest.mark.integration
def test_completion_errors(server, body, status, param):
    err = _error(httpx.post(server.url + "/v1/completions", content=body), status)
    assert err["param"] == param


@pytest.mark.parametrize("body, param", [
    ({"model": "mock", "messages": []}, "messages"),
    ({"model": "mock", "messages": [{"role": "wizard", "content": "x"}]}, "messages"),
    ({"model": "mock", "messages": "hi"}, "messages"),
])
@pytest.mark.integration
def test_chat_errors(server, body, param):
    assert _error(httpx.post(server.url + "/v1/chat/completions", json=body), 400)["param"] == param


@pytest.mark.integration
def test_prompt_over_context_length(server, client):
    long = " ".join(["w"] * 70)  # the mock's context is 64 tokens
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="mock", prompt=long, max_tokens=1)
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):  # the real model: 256 positions
        client.chat.completions.create(model="tiny-arith", messages=[{"role": "user", "content": "1+1 " * 200}],
                                       max_tokens=8)
    with pytest.raises(openai.BadRequestError):  # also when streaming: the status comes before any data
        client.completions.create(model="mock", prompt=long, max_tokens=1, stream=True)


@pytest.mark.integration
def test_body_size_limit(server):
    _error(httpx.post(server.url + "/v1/completions", json={"model": "mock", "prompt": "a" * 30_000}), 413)


@pytest.mark.integration
def test_engine_failure_is_contained(server, client):
    r = httpx.post(server.url + "/v1/completions", json={"model": "mock", "prompt": "fail", "max_tokens": 2})
    err = _error(r, 500)
    assert err["type"] == "server_error"
    stream = httpx.post(server.url + "/v1/completions", json={"model": "mock", "prompt": "fail", "max_tokens": 2, "stream": True})
    assert stream.status_code == 200 and stream.text.endswith("data: [DONE]\n\n")
    assert parse_events(stream.text)[-1]["error"]["type"] == "server_error"
    assert client.completions.create(model="mock", prompt="ok", max_tokens=1).choices[0].text == " ok"


@pytest.mark.integration
def test_metrics_count_requests_tokens_and_errors(server, client):
    client.completions.create(model="mock", prompt="m", max_tokens=2)
    httpx.post(server.url + "/v1/completions", content=b"{")
    text = httpx.get(server.url + "/metrics").text
    assert 'lifecycle_requests_total{route="/v1/completions",status="200"}' in text
    assert 'lifecycle_errors_total{status="400"}' in text
    assert 'lifecycle_generated_tokens_total{model="mock"}' in text
    assert 'lifecycle_request_latency_seconds_bucket{le="0.005",route="/v1/completions"}' in text


@pytest.mark.integration
def test_client_disconnect_mid_stream(hf_engine):
    backend = LocalBackend({"slow": EngineHost(MockEngine(delay_s=0.05), "slow", stream_interval_s=0.0)})
    with ServerThread(build_app(backend)) as srv:
        with httpx.stream("POST", srv.url + "/v1/completions",
                          json={"model": "slow", "prompt": "a b", "max_tokens": 100, "stream": True}) as r:
            next(r.iter_lines())  # read one line, then hang up
        ok = httpx.post(srv.url + "/v1/completions", json={"model": "slow", "prompt": "a", "max_tokens": 1})
        assert ok.status_code == 200


@pytest.mark.integration
def test_request_timeout():
    backend = LocalBackend({"slow": EngineHost(MockEngine(delay_s=0.2), "slow", stream_interval_s=0.0)})
    with ServerThread(build_app(backend, {"request_timeout_s": 0.3})) as srv:
        err = _error(httpx.post(srv.url + "/v1/completions", json={"model": "slow", "prompt": "a", "max_tokens": 10}), 504)
        assert err["type"] == "timeout_error"
        s = httpx.post(srv.url + "/v1/completions", json={"model": "slow", "prompt": "a", "max_tokens": 10, "stream": True})
        assert s.text.endswith("data: [DONE]\n\n") and parse_events(s.text)[-1]["error"]["type"] == "timeout_error"


# ---- auth --------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_api_key_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_SERVE_KEY", "sekret-1")
    keys = tmp_path / "keys.txt"
    keys.write_text("# team keys\nsekret-2\n")
    backend = LocalBackend({"mock": EngineHost(MockEngine(), "mock")})
    app = build_app(backend, {"api_key_env": "TEST_SERVE_KEY", "api_keys_file": str(keys)})
    with ServerThread(app) as srv:
        for key in ("sekret-1", "sekret-2"):
            c = openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0)
            assert c.completions.create(model="mock", prompt="a", max_tokens=1).choices[0].text == " a"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0).models.list()
        _error(httpx.get(srv.url + "/v1/models"), 401)
        _error(httpx.get(srv.url + "/metrics", headers={"Authorization": "Basic sekret-1"}), 401)
        assert httpx.get(srv.url + "/health").status_code == 200  # health checks stay open
        assert httpx.get(srv.url + "/ping").status_code == 200


# ---- the CLI: `lifecycle serve --engine local`, and a clean exit on SIGTERM ----------------------------
@pytest.mark.integration
def test_cli_local_serve_and_clean_shutdown(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TEST_SERVE_KEY": "k1"}
    proc = subprocess.Popen([sys.executable, "-m", "lifecycle.cli", "serve", "--engine", "local", "--model", "mock",
                             "--model", "echo=mock", "--port", str(port), "--api-key-env", "TEST_SERVE_KEY"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/ping").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "timeout"
            time.sleep(0.2)
        c = openai.OpenAI(base_url=url + "/v1", api_key="k1", max_retries=0)
        assert {m.id for m in c.models.list().data} == {"mock", "echo"}
        assert c.completions.create(model="echo", prompt="hi", max_tokens=1).choices[0].text == " hi"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/ping", timeout=2)


@pytest.mark.unit
def test_cli_errors_are_one_line():
    r = subprocess.run([sys.executable, "-m", "lifecycle.cli", "serve", "--engine", "local"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: no model to serve")
    r = subprocess.run([sys.executable, "-m", "lifecycle.cli", "serve", "--model", "mock", "--api-key-env",
                        "SURELY_UNSET_VAR_42"], capture_output=True, text=True, timeout=60,
                       env={k: v for k, v in os.environ.items() if k != "SURELY_UNSET_VAR_42"})
    assert r.returncode == 2 and "SURELY_UNSET_VAR_42" in r.stderr and "Traceback" not in r.stderr
