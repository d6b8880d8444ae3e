"""Serving pieces without a server: request parsing, auth, batching, stream coalescing, config, imports.

    python -m pytest tests/test_serve_unit.py -q
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from lifecycle.engine import SamplingParams
from lifecycle.errors import UserError
from serve import protocol as P
from serve.auth import authorized, load_keys
from serve.config import ServeConfig
from serve.host import Batcher, EngineHost, parse_model_spec
from serve.mock import MockEngine

pytestmark = pytest.mark.unit


def test_requests_are_strict():
    req = P.validate(P.ChatRequest, {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                     "temperature": 0, "stop": "x", "max_completion_tokens": 5, "user": "ignored"})
    params = req.sampling(64)
    assert req.prompts() == [[{"role": "user", "content": "hi"}]]
    assert (params.max_tokens, params.temperature, params.stop) == (5, 0.0, ["x"])
    assert P.validate(P.CompletionRequest, {"model": "m", "prompt": "a"}).sampling(7).temperature == 1.0  # OpenAI's
    assert P.validate(P.CompletionRequest, {"model": "m", "prompt": "a", "n": 2.0}).n == 2  # JSON Schema's integer
    for bad, param in [({"prompt": "a", "n": True}, "n"), ({"prompt": "a", "seed": 1.5}, "seed"),
                       ({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"prompt": []}, "prompt"),
                       ({"prompt": "a", "n": "2"}, "n"), ({"prompt": "a", "max_tokens": 0}, "max_tokens")]:
        bad = {"model": "m", **bad}
        with pytest.raises(P.APIError) as e:
            P.validate(P.CompletionRequest, bad).sampling(8) and P.validate(P.CompletionRequest, bad).prompts()
        assert e.value.status == 400 and e.value.param == param
    with pytest.raises(P.APIError):
        P.parse_json(b"\xff\xfe")


def test_auth_constant_time_compare(tmp_path, monkeypatch):
    assert authorized([], None)
    keys = [b"k1", b"k2"]
    assert authorized(keys, b"Bearer k2") and authorized(keys, b"bearer k1")
    assert not authorized(keys, b"Bearer k3") and not authorized(keys, None) and not authorized(keys, b"k1")
    monkeypatch.setenv("K_ENV", " k-env \n")
    f = tmp_path / "keys"
    f.write_text("a\n\n# comment\nb\n")
    assert load_keys("K_ENV", str(f)) == [b"k-env", b"a", b"b"]
    with pytest.raises(UserError):
        load_keys("", str(tmp_path / "nope"))
    f.write_text("# none\n")
    with pytest.raises(UserError):
        load_keys("", str(f))


def test_batcher_groups_queued_requests():
    calls = []

    async def fn(prompts, params):
        calls.append(len(prompts))
        await asyncio.sleep(0.01)
        return [f"{p}!" for p in prompts]

    async def main():
        b = Batcher(fn, max_batch_size=4)
        return await asyncio.gather(*(b(str(i), None) for i in range(10)))

    assert asyncio.run(main()) == [f"{i}!" for i in range(10)]
    assert calls == [4, 4, 2]  # everything queued while the loop was busy, in batches of at most 4


def test_generate_batch_isolates_failures_and_groups_params():
    mock = MockEngine()
    host = EngineHost(mock, "m")
    greedy, sampled = SamplingParams(max_tokens=2, temperature=0), SamplingParams(max_tokens=2, temperature=1, seed=3)
    out = host.generate_batch(["a", "fail", "b", "c", "d"], [greedy, greedy, greedy, sampled, sampled])
    assert [o.text for o in (out[0], out[2])] == [" a a", " b b"] and isinstance(out[1], RuntimeError)
    assert mock.calls[0] == 3  # the greedy group in one call; seeded sampled requests run one by one
    assert host.info()["requests"] == 5


def test_stream_coalesces_and_validates_first():
    async def collect(interval):
        host = EngineHost(MockEngine(delay_s=0.002, context_length=300), "m", stream_interval_s=interval)
        return [ev async for ev in host.stream("a b c", SamplingParams(max_tokens=60))]

    each, merged = asyncio.run(collect(0.0)), asyncio.run(collect(0.05))
    assert each[0] == merged[0] == {"prompt_tokens": 3}
    for events in (each, merged):
        assert "".join(e["text"] for e in events[1:]) == " a b c" * 20
        assert events[-1]["finish_reason"] == "length" and events[-1]["tokens"] == 60
    assert len(merged) < len(each) / 3

    async def too_long():
        host = EngineHost(MockEngine(context_length=10), "m")
        return [ev async for ev in host.stream("a b c", SamplingParams(max_tokens=9))]

    with pytest.raises(UserError, match="context length"):
        asyncio.run(too_long())


def test_config_and_model_specs():
    with pytest.raises(UserError):
        ServeConfig(engine="vllm")
    with pytest.raises(UserError):
        ServeConfig(min_replicas=3, max_replicas=2)
    with pytest.raises(UserError):
        ServeConfig(num_cpus=0)
    assert parse_model_spec("x=mock") == {"name": "x", "path": "mock"}
    spec = parse_model_spec("tiny-arith")
    assert spec["name"] == "tiny-arith" and spec["path"].endswith("tiny-arith")
    with pytest.raises(UserError):
        parse_model_spec("no/such/dir")
    with pytest.raises(UserError):
        parse_model_spec("name=")


def test_cli_help_imports_nothing_heavy():
    code = ("import sys, lifecycle.cli, serve.cli, serve.config, deploy.render; "
            "print(sorted(m for m in ('torch', 'transformers', 'ray', 'fastapi', 'uvicorn', 'pydantic') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "lifecycle.cli", "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--engine" in r.stdout and "num_cpus" in r.stdout


def test_serve_backend_registry_carries_runner_and_options():
    """Each backend entry names its runner and its own options; ServeConfig holds the union of the options."""
    import dataclasses
    import importlib

    from serve.backends import BACKENDS, backend
    from serve.config import ServeConfig

    names = {f.name for f in dataclasses.fields(ServeConfig)}
    for name, b in BACKENDS.items():
        module, fn = b.runner.split(":")
        assert callable(getattr(importlib.import_module(module), fn)), name
        assert set(b.option_names()) <= names
    assert "min_replicas" in backend("ray").option_names() and backend("local").option_names() == ()
    with pytest.raises(UserError, match="serving engine 'nope' is unknown; choose one of ray, local"):
        ServeConfig(engine="nope")
