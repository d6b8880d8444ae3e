"""The OpenAI API surface against hostile and unusual requests: no 5xx, one error shape on every route, the
OpenAPI document, strict mode, n with streaming, logprobs and echo, response_format, special tokens as text.

    python -m pytest tests/test_serve_api.py -q
"""

from __future__ import annotations

import json
import re
import subprocess

import httpx
import jsonschema
import pytest

from lifecycle.engine import SamplingParams
from lifecycle.sse import parse_events
from serve.app import build_app
from serve.host import EngineHost
from serve.local import LocalBackend, ServerThread
from serve.mock import MockEngine

pytestmark = pytest.mark.integration
CHAT = [{"role": "user", "content": "What is 12+34?"}]


@pytest.fixture(scope="module")
def server(hf_engine):
    hosts = {"tiny-arith": EngineHost(hf_engine, "tiny-arith"),
             "mock": EngineHost(MockEngine(context_length=256), "mock", stream_interval_s=0.0)}
    with ServerThread(build_app(LocalBackend(hosts), {"max_tokens_limit": 100})) as srv:
        yield srv


def post(server, path: str, body, headers: dict | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, timeout=60,
                      headers={"Content-Type": "application/json", **(headers or {})})


def error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


# ---- hostile bodies ------------------------------------------------------------------------------------
DEEP = b'{"model": "mock", "prompt": "a", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", b'{"model": "\\ud800", "prompt": "a"}', "model"),
    ("/v1/chat/completions", b'{"model": "mock", "messages": [{"role": "user", "content": "hi \\udfff"}]}', "messages"),
    ("/v1/completions", DEEP, None),
    ("/v1/completions", b'{"model": "mock", "prompt": "a", "seed": 18446744073709551616}', "seed"),
    ("/v1/completions", b'{"model": "mock", "prompt": [1, -2]}', "prompt"),
    ("/v1/completions", b'{"model": "mock", "prompt": "a", "stop": ["a", "b", "c", "d", "e"]}', "stop"),
    ("/v1/completions", json.dumps({"model": "mock", "prompt": "a", "stop": "x" * 257}).encode(), "stop"),
    ("/v1/completions", json.dumps({"model": "mock", "prompt": ["a"] * 65}).encode(), "prompt"),
    ("/v1/chat/completions", json.dumps({"model": "mock", "messages": [{"role": "user", "content": "a"}] * 513}).encode(),
     "messages"),
    ("/v1/chat/completions", b'{"model": "mock", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
     "messages"),
    ("/v1/completions", b'{"model": "mock", "prompt": "a", "max_tokens": 0}', "max_tokens"),
    ("/v1/completions", b'{"model": "mock", "prompt": "a", "temperature": 1e999}', "temperature"),
    ("/invocations", b'{"messages": "\\ud800"}', "messages"),
])
def test_hostile_bodies_get_4xx_in_openai_shape(server, path, body, param):
    assert error(post(server, path, body), 400)["param"] == param


def test_values_that_cannot_be_honoured_are_mapped(server):
    greedy = post(server, "/v1/chat/completions", {"model": "tiny-arith", "messages": CHAT, "max_tokens": 8,
                                                   "temperature": 0}).json()["choices"][0]["message"]["content"]
    for t in (1e-40, 1e-320):  # underflowing temperatures are greedy on every engine
        r = post(server, "/v1/chat/completions", {"model": "tiny-arith", "messages": CHAT, "max_tokens": 8, "temperature": t})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == greedy

    def sampled(seed):
        body = {"model": "tiny-arith", "prompt": "12+", "max_tokens": 12, "temperature": 1.5, "seed": seed}
        r = post(server, "/v1/completions", body)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]
    for seed in (2**63 - 1, -(2**63), -5):
        assert sampled(seed) == sampled(seed % 2**32)  # seeds are reduced mod 2^32, documented


def test_empty_stop_strings_are_ignored(server):
    def text(stop):
        body = {"model": "tiny-arith", "messages": CHAT, "max_tokens": 8, "temperature": 0, "stop": stop}
        return post(server, "/v1/chat/completions", body).json()["choices"][0]["message"]["content"]
    full = text([])
    assert len(full) > 1 and text([""]) == full and text("") == full


def test_every_route_answers_in_openai_shape(server):
    assert error(httpx.get(server.url + "/v1/nope"), 404)["code"] == "not_found"
    assert error(httpx.get(server.url + "/v1/chat/completions"), 405)["code"] == "method_not_allowed"
    assert error(httpx.get(server.url + "/v1/models/nope"), 404)["code"] == "model_not_found"
    card = httpx.get(server.url + "/v1/models/tiny-arith").json()
    assert card["id"] == "tiny-arith" and card["object"] == "model"
    metrics = httpx.get(server.url + "/metrics").text
    assert 'lifecycle_engine_in_flight{model="mock"} 0' in metrics and "lifecycle_engine_rejected_total" in metrics


# ---- the OpenAPI document --------------------------------------------------------------------------------
def validator(doc: dict, name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": doc["components"]})


def test_openapi_describes_requests_and_responses(server):
    doc = httpx.get(server.url + "/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/completions", "/invocations"):
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body, path
        assert {"200", "400", "404", "429", "500"} <= set(doc["paths"][path]["post"]["responses"])
    req = doc["components"]["schemas"]["ChatRequest"]
    assert {"model", "messages"} <= set(req["required"]) and "logprobs" in req["properties"]
    assert doc["components"]["schemas"]["CompletionRequest"]["properties"]["max_tokens"]["anyOf"][0]["maximum"] == 100
    # what the server sends validates against what the document says it sends
    chat = post(server, "/v1/chat/completions", {"model": "tiny-arith", "messages": CHAT, "max_tokens": 4}).json()
    validator(doc, "ChatCompletion").validate(chat)
    text = post(server, "/v1/completions", {"model": "mock", "prompt": "a b", "max_tokens": 3, "n": 2}).json()
    validator(doc, "TextCompletion").validate(text)
    validator(doc, "ErrorResponse").validate(post(server, "/v1/completions", {"model": "mock"}).json())
    with pytest.raises(jsonschema.ValidationError):  # and the check can fail
        validator(doc, "ChatCompletion").validate(text)
    stream = post(server, "/v1/chat/completions", {"model": "mock", "messages": CHAT, "max_tokens": 3, "stream": True,
                                                   "stream_options": {"include_usage": True}})
    for event in parse_events(stream.text):
        validator(doc, "ChatCompletionChunk").validate(event)


def test_strict_mode_refuses_ignored_fields(server):
    body = {"model": "mock", "prompt": "a", "max_tokens": 2, "user": "u1", "logit_bias": {"5": 1}, "suffix": None}
    r = post(server, "/v1/completions", body)
    assert r.status_code == 200 and r.headers["x-lifecycle-ignored"] == "user,logit_bias"  # null is not ignored
    err = error(post(server, "/v1/completions", body, {"X-Lifecycle-Strict": "true"}), 400)
    assert err["code"] == "unsupported_parameter" and err["param"] == "user"
    clean = {"model": "mock", "prompt": "a", "max_tokens": 2}
    assert post(server, "/v1/completions", clean, {"X-Lifecycle-Strict": "true"}).status_code == 200


# ---- streaming with n ------------------------------------------------------------------------------------
def test_n_and_prompt_lists_stream_with_indices(server):
    body = {"model": "mock", "prompt": ["a b c", "x y"], "n": 2, "max_tokens": 4}
    whole = post(server, "/v1/completions", body).json()["choices"]
    events = parse_events(post(server, "/v1/completions", {**body, "stream": True,
                                                           "stream_options": {"include_usage": True}}).text)
    texts: dict[int, str] = {}
    for ev in events:
        for c in ev["choices"]:
            texts[c["index"]] = texts.get(c["index"], "") + c["text"]
    assert texts == {c["index"]: c["text"] for c in whole} and len(texts) == 4
    assert events[-1]["usage"]["completion_tokens"] == 16
    chat = parse_events(post(server, "/v1/chat/completions", {"model": "tiny-arith", "messages": CHAT, "n": 2,
                                                              "max_tokens": 6, "temperature": 0, "stream": True}).text)
    joined = {0: "", 1: ""}
    for ev in chat:
        for c in ev["choices"]:
            joined[c["index"]] += c["delta"].get("content") or ""
    ref = post(server, "/v1/chat/completions", {"model": "tiny-arith", "messages": CHAT, "max_tokens": 6,
                                                "temperature": 0}).json()["choices"][0]["message"]["content"]
    assert joined == {0: ref, 1: ref}


# ---- logprobs, echo, token-id prompts, response_format ---------------------------------------------------
def test_chat_logprobs_match_the_engine(server, hf_engine):
    body = {"model": "tiny-arith", "messages": CHAT, "max_tokens": 6, "temperature": 0, "logprobs": True,
            "top_logprobs": 2}
    choice = post(server, "/v1/chat/completions", body).json()["choices"][0]
    [ref] = hf_engine.generate([CHAT], SamplingParams(max_tokens=6, logprobs=2))
    content = choice["logprobs"]["content"]
    assert [c["token"] for c in content] == [t.token for t in ref.logprobs]
    assert [c["logprob"] for c in content] == pytest.approx([t.logprob for t in ref.logprobs], abs=1e-4)
    assert "".join(c["token"] for c in content) == choice["message"]["content"]
    for c in content:  # greedy: the chosen token is the most likely one, listed first
        assert len(c["top_logprobs"]) == 2 and c["top_logprobs"][0]["token"] == c["token"]
        assert bytes(c["bytes"]).decode() == c["token"]
    plain = post(server, "/v1/chat/completions", {**body, "logprobs": False, "top_logprobs": None}).json()
    assert plain["choices"][0]["logprobs"] is None
    assert plain["choices"][0]["message"]["content"] == choice["message"]["content"]


def test_echo_logprobs_score_like_the_engine(server, hf_engine):
    """`lifecycle eval --endpoint` scores through completions echo + logprobs; it must agree with in-process."""
    from lifecycle.eval.endpoint import EndpointEngine

    pairs = [("12+34=", "46"), ("What is 7+8? ", "15"), ("", "3+4=7"), ("99+1=", "100\n")]
    remote = EndpointEngine(server.url, model="tiny-arith")
    try:
        got = remote.score(pairs)
    finally:
        remote.close()
    for r, ref in zip(got, hf_engine.score(pairs)):
        assert r.num_tokens == ref.num_tokens and r.is_greedy == ref.is_greedy
        assert r.logprob == pytest.approx(ref.logprob, abs=1e-3)


def test_token_id_prompts_and_echo(server, hf_engine):
    ids = hf_engine.tok("12+34=").input_ids
    r = post(server, "/v1/completions", {"model": "tiny-arith", "prompt": ids, "max_tokens": 0, "echo": True,
                                         "logprobs": 1}).json()
    lp = r["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(ids) and lp["token_logprobs"][0] is None
    assert r["choices"][0]["text"].endswith("12+34=") and r["usage"]["completion_tokens"] == 0
    as_text = post(server, "/v1/completions", {"model": "tiny-arith", "prompt": "12+34=", "max_tokens": 4,
                                               "temperature": 0}).json()["choices"][0]["text"]
    as_ids = post(server, "/v1/completions", {"model": "tiny-arith", "prompt": [ids], "max_tokens": 4,
                                              "temperature": 0}).json()["choices"][0]["text"]
    assert as_ids == as_text
    err = error(post(server, "/v1/completions", {"model": "tiny-arith", "prompt": [10**9]}), 400)
    assert err["param"] in ("prompt", None)


@pytest.mark.parametrize("fmt, check", [
    ({"type": "json_object"}, lambda v: isinstance(v, dict)),
    ({"type": "json_schema", "json_schema": {"name": "sum", "schema": {
        "type": "object", "properties": {"answer": {"enum": ["yes", "no"]}, "sure": {"type": "boolean"}},
        "required": ["answer", "sure"], "additionalProperties": False}}},  # bounded: a tiny model loves digits
     lambda v: set(v) == {"answer", "sure"} and v["answer"] in ("yes", "no") and isinstance(v["sure"], bool)),
])
def test_response_format_constrains_the_output(server, fmt, check):
    body = {"model": "tiny-arith", "messages": CHAT, "max_tokens": 48, "temperature": 0, "response_format": fmt}
    r = post(server, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice  # the JSON closed before max_tokens
    assert check(json.loads(choice["message"]["content"]))


def test_lm_eval_loglikelihood_agrees_with_in_process_scores(server, hf_engine, base_artifact, tmp_path):
    """lm-eval's `local-completions` model (token-id prompts, echo, logprobs) against `lifecycle serve`: every
    log-likelihood it reads equals what the engine scores in-process, within 1e-3."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    rows = [{"q": f"{a}+{b}=", "choices": [str(a + b), str(a + b + 1), str(a * b)], "gold": 0}
            for a, b in [(12, 34), (7, 8), (40, 2), (99, 1), (5, 5), (23, 19)]]
    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "arith_mc.yaml").write_text(
        f"task: lifecycle_arith_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: gold\ntarget_delimiter: \"\"\nmetric_list:\n  - metric: acc\n")
    out = lm_eval.simple_evaluate(
        model="local-completions", tasks=["lifecycle_arith_mc"], task_manager=TaskManager(include_path=str(tmp_path)),
        model_args={"model": "tiny-arith", "base_url": server.url + "/v1/completions", "tokenizer": str(base_artifact.path),
                    "tokenizer_backend": "huggingface", "add_bos_token": True, "num_concurrent": 1, "max_retries": 1},
        log_samples=True)
    samples = out["samples"]["lifecycle_arith_mc"]
    assert len(samples) == len(rows)
    for s in samples:
        pairs = [tuple(a) for a in s["arguments"]]
        for (ll, greedy), ref in zip((r[0] for r in s["resps"]), hf_engine.score(pairs)):
            assert ll == pytest.approx(ref.logprob, abs=1e-3) and greedy == ref.is_greedy


def test_schemathesis_finds_no_server_error_or_schema_violation(server, tmp_path):
    """A short run of the fuzzer benchmarks/serve_fuzz.py runs long: every phase, every check but
    positive_data_acceptance (an engine may refuse a schema-valid request with a documented 4xx)."""
    import shutil

    exe = shutil.which("schemathesis")
    assert exe, "schemathesis is in the test extra"
    out = subprocess.run([exe, "run", server.url + "/openapi.json", "--checks", "all", "--exclude-checks",
                          "positive_data_acceptance", "--max-examples", "12", "--seed", "7", "--no-color"],
                         capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    generated = sum(int(n) for n in re.findall(r"(\d+) generated", text))
    assert out.returncode == 0 and generated >= 200, text[-3000:]


def test_streamed_logprobs_equal_non_streamed(server):
    body = {"model": "tiny-arith", "messages": CHAT, "max_tokens": 8, "temperature": 0, "logprobs": True,
            "top_logprobs": 1}
    whole = post(server, "/v1/chat/completions", body).json()["choices"][0]["logprobs"]["content"]
    events = parse_events(post(server, "/v1/chat/completions", {**body, "stream": True}).text)
    streamed = [t for ev in events for c in ev["choices"] for t in ((c.get("logprobs") or {}).get("content") or [])]
    assert [t["token"] for t in streamed] == [t["token"] for t in whole]
    assert [t["logprob"] for t in streamed] == pytest.approx([t["logprob"] for t in whole], abs=1e-4)
    text = post(server, "/v1/completions", {"model": "tiny-arith", "prompt": "12+34=", "max_tokens": 5,
                                            "temperature": 0, "logprobs": 2, "stream": True}).text
    offsets = [o for ev in parse_events(text) for c in ev["choices"] for o in (c["logprobs"] or {}).get("text_offset", [])]
    assert offsets == sorted(offsets) and len(offsets) == 5
