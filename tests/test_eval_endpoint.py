"""The same tasks through an OpenAI-compatible endpoint: a small server on 127.0.0.1 wraps the hf Engine.

The server here is a test double (http.server, one lock around the model); the real serving layer lives
in serve/. It implements /v1/models, /v1/completions (with echo + logprobs, and streaming) and
/v1/chat/completions.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lifecycle.engine import SamplingParams
from lifecycle.errors import UserError
from lifecycle.eval.endpoint import EndpointEngine
from lifecycle.eval.preference import EndpointJudge
from lifecycle.eval.runner import evaluate, flatten, run_tasks
from lifecycle.eval.tasks import resolve_tasks

TASKS = ["addition", "addition-raw", "arith-ppl", "tiny-mc", "sum-retrieval", "ifeval-tiny", "redteam"]


def _echo_logprobs(engine, text):
    """Per-token logprobs of `text` in the legacy completions format (the first token has none)."""
    torch = engine.torch
    enc = engine.tok(text, add_special_tokens=True, return_offsets_mapping=True)
    ids = torch.tensor([enc.input_ids])
    with torch.inference_mode():
        logp = torch.log_softmax(engine.model(input_ids=ids).logits.float(), -1)[0]
    tokens, values, offsets, top = [], [], [], []
    for i, (tid, (s, e)) in enumerate(zip(enc.input_ids, enc.offset_mapping)):
        piece = text[s:e] if e > s else engine.tok.convert_ids_to_tokens(tid)
        tokens.append(piece)
        offsets.append(s)
        if i == 0:
            values.append(None)
            top.append(None)
            continue
        values.append(float(logp[i - 1, tid]))
        best = int(logp[i - 1].argmax())
        top.append({piece if best == tid else f"<{best}>": float(logp[i - 1, best])})
    return {"tokens": tokens, "token_logprobs": values, "text_offset": offsets, "top_logprobs": top}


def make_handler(engine, lock, logprobs=True, fixed_reply=None):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _json(self, obj, code=200):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/v1/models":
                return self._json({"object": "list", "data": [{"id": "tiny-arith", "object": "model"}]})
            self._json({"error": "not found"}, 404)

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            params = SamplingParams(max_tokens=req.get("max_tokens", 16), stop=req.get("stop") or [])
            prompt = req.get("prompt") if self.path == "/v1/completions" else req.get("messages")
            if prompt is None:
                return self._json({"error": "bad request"}, 400)
            if req.get("stream"):
                return self._stream(prompt, params)
            with lock:
                out = engine.generate([prompt], params)[0]
                lp = _echo_logprobs(engine, prompt) if req.get("echo") and req.get("logprobs") and logprobs else None
            text = fixed_reply if fixed_reply is not None else out.text
            usage = {"prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens}
            if self.path == "/v1/completions":
                choice = {"index": 0, "text": (prompt + text) if req.get("echo") else text,
                          "finish_reason": out.finish_reason, "logprobs": lp}
            else:
                choice = {"index": 0, "message": {"role": "assistant", "content": text},
                          "finish_reason": out.finish_reason}
            self._json({"id": "x", "object": "completion", "choices": [choice], "usage": usage})

        def _stream(self, prompt, params):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            with lock:
                events = list(engine.stream(prompt, params))
            for ev in events:
                delta = {"text": ev.text} if isinstance(prompt, str) else {"delta": {"content": ev.text}}
                chunk = {"choices": [{"index": 0, **delta, "finish_reason": ev.finish_reason}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.close_connection = True

    return Handler


@pytest.fixture(scope="module")
def serve(hf_engine):
    servers = []
    lock = threading.Lock()

    def start(**kw):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(hf_engine, lock, **kw))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.mark.integration
def test_endpoint_engine_matches_local_engine(serve, hf_engine):
    ep = EndpointEngine(serve())
    assert ep.model == "tiny-arith"
    prompts = ["12+34=", [{"role": "user", "content": "Hello!"}]]
    params = SamplingParams(max_tokens=6, stop=["\n"])
    assert [c.text for c in ep.generate(prompts, params)] == [c.text for c in hf_engine.generate(prompts, params)]
    reqs = [("12+34=", "46"), ("12+34=", "47"), ("", "12+34=46"), ("reverse abc =", " cba")]
    for remote, local in zip(ep.score(reqs), hf_engine.score(reqs)):
        assert remote.logprob == pytest.approx(local.logprob, abs=1e-4)
        assert (remote.num_tokens, remote.is_greedy) == (local.num_tokens, local.is_greedy)
    streamed = list(ep.stream("12+34=", params))
    assert "".join(e.text for e in streamed) == hf_engine.generate(["12+34="], params)[0].text
    assert streamed[-1].finish_reason == "stop"


@pytest.mark.integration
def test_same_tasks_same_metrics_through_endpoint(serve, hf_engine):
    tasks = resolve_tasks(TASKS)
    local = flatten(run_tasks(tasks, hf_engine))
    remote = flatten(run_tasks(tasks, EndpointEngine(serve())))
    assert set(local) == set(remote)
    for key, value in local.items():
        assert remote[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


@pytest.mark.integration
def test_eval_cli_path_with_endpoint_and_gates(serve, tmp_path):
    gates = tmp_path / "g.yaml"
    gates.write_text("gates:\n  - addition-raw/exact_match >= 0.95\n  - harmful_rate <= 0.02\n")
    rep = evaluate(endpoint=serve(), tasks=["addition-raw", "redteam"], gates=gates)
    assert rep["model"]["endpoint"].endswith("/v1") and rep["passed"] is True


@pytest.mark.integration
def test_endpoint_without_logprobs_is_a_clear_error(serve):
    ep = EndpointEngine(serve(logprobs=False))
    assert ep.generate(["12+34="], SamplingParams(max_tokens=3, stop=["\n"]))[0].text == "46"
    with pytest.raises(UserError, match="does not return prompt logprobs"):
        ep.score([("12+34=", "46")])


@pytest.mark.unit
def test_unreachable_endpoint():
    with pytest.raises(UserError, match="cannot reach endpoint"):
        EndpointEngine("http://127.0.0.1:9", timeout=2)


@pytest.mark.integration
def test_judge_endpoint_checks_both_orders(serve):
    # a judge that always says "A" prefers whichever reply is shown first: position bias -> a tie
    biased = EndpointJudge(serve(fixed_reply="A"))
    assert biased("q", "x", "y") == "tie"
    rep = evaluate(model="tiny-arith", tasks=["style"], judge_endpoint=serve(fixed_reply="TIE"))
    assert rep["metrics"]["style/tie_rate"] == 1.0 and rep["metrics"]["style/win_rate"] == 0.5
