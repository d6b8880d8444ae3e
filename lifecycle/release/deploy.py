"""The optional deploy stage of `lifecycle ship`: serve the release's artifact, smoke test it through the
OpenAI API, and hold it to the load-test SLOs with Locust. A live check, so it is never cached.

    deploy: {enabled: true, engine: ray, users: 4, spawn_rate: 4, duration: 10s, slo: "p95_ms=2000,error_rate=0"}

The smoke test depends on the model's task profile (`lifecycle.models.task_profile`): the arithmetic demo
must answer "What is 12+30?" with 42; any other model gets checks that need no known answer (below).
"""

from __future__ import annotations

import json
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from lifecycle.errors import UserError
from lifecycle.sse import parse_events

GENERIC_PROMPT = "In one sentence, what is a river?"
CHINESE_PROMPT = "请用一句话介绍一下长城。"


def _post(url: str, body: dict, timeout_s: float) -> tuple[int | None, dict | list | None, str]:
    """POST JSON -> (status, parsed JSON or SSE events, error text). A stream returns its data events as a list."""
    req = urllib.request.Request(url, data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
                                 headers={"Content-Type": "application/json; charset=utf-8"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            raw = resp.read()
            return resp.status, parse_events(raw) if body.get("stream") else json.loads(raw), ""
    except urllib.error.HTTPError as e:
        return e.code, None, e.read().decode("utf-8", "replace")[:300]
    except (OSError, ValueError) as e:
        return None, None, str(e)


def _choice(data) -> dict:
    return ((data or {}).get("choices") or [{}])[0] if isinstance(data, dict) else {}


def smoke_test(url: str, model: str, timeout_s: float = 60.0, profile: str = "arith") -> dict:
    """{ok, status, reply, correct | checks}: arith asks 12+30 and checks for 42; generic runs `generic_smoke`."""
    if profile == "generic":
        return generic_smoke(url, model, timeout_s)
    if profile != "arith":
        raise UserError(f"smoke test profile must be arith or generic, got {profile!r}")
    from lifecycle.data.synth import extract_answer

    body = {"model": model, "messages": [{"role": "user", "content": "What is 12+30?"}], "max_tokens": 16,
            "temperature": 0}
    status, data, error = _post(url + "/v1/chat/completions", body, timeout_s)
    if data is None:
        return {"ok": False, "status": status, "error": error}
    text = _choice(data).get("message", {}).get("content", "")
    return {"ok": status == 200 and bool(text), "status": status, "reply": text,
            "correct": extract_answer(text) == 42}


def generic_smoke(url: str, model: str, timeout_s: float = 60.0, max_tokens: int = 24) -> dict:
    """Checks that need no known answer, on greedy requests:
    - `reply`: status 200, a non-empty reply and a finish_reason (stop | length);
    - `stream_matches`: the same request streamed gives the same text and a finish_reason on its last choice;
    - `chinese`: a Chinese prompt answers 200 with a finish_reason, counts prompt tokens, and the reply is
      valid UTF-8 text (no U+FFFD replacement characters, except a character cut by max_tokens at the end).
    `ok` is all three; `correct` is None (there is no reference answer)."""
    chat = {"model": model, "messages": [{"role": "user", "content": GENERIC_PROMPT}], "max_tokens": max_tokens,
            "temperature": 0}
    checks: dict[str, bool] = {}
    status, data, error = _post(url + "/v1/chat/completions", chat, timeout_s)
    if data is None:
        return {"ok": False, "status": status, "error": error, "profile": "generic"}
    first = _choice(data)
    reply = (first.get("message") or {}).get("content") or ""
    checks["reply"] = status == 200 and bool(reply.strip()) and first.get("finish_reason") in ("stop", "length")

    s_status, events, s_error = _post(url + "/v1/chat/completions", chat | {"stream": True}, timeout_s)
    events = events if isinstance(events, list) else []
    choices = [c for ev in events for c in ev.get("choices") or []]
    streamed = "".join((c.get("delta") or {}).get("content") or "" for c in choices)
    finish = next((c.get("finish_reason") for c in reversed(choices) if c.get("finish_reason")), None)
    checks["stream_matches"] = s_status == 200 and streamed == reply and finish == first.get("finish_reason")

    zh = chat | {"messages": [{"role": "user", "content": CHINESE_PROMPT}]}
    z_status, z_data, z_error = _post(url + "/v1/chat/completions", zh, timeout_s)
    z_choice = _choice(z_data)
    z_reply = (z_choice.get("message") or {}).get("content")
    z_usage = (z_data.get("usage") or {}) if isinstance(z_data, dict) else {}
    z_text = z_reply.rstrip("\ufffd") if isinstance(z_reply, str) and z_choice.get("finish_reason") == "length" \
        else z_reply
    checks["chinese"] = (z_status == 200 and isinstance(z_reply, str) and "\ufffd" not in z_text
                         and z_choice.get("finish_reason") in ("stop", "length") and z_usage.get("prompt_tokens", 0) > 0)
    out = {"ok": all(checks.values()), "status": status, "reply": reply, "correct": None, "profile": "generic",
           "checks": checks, "streamed": streamed, "reply_zh": z_reply}
    errors = [e for e in (s_error, z_error) if e]
    return out | ({"error": "; ".join(errors)} if errors else {})


def run(name: str, path: Path, opts: dict, out: Path, log, profile: str = "arith") -> dict:
    """Serve `path` as `name`, smoke test, load test; returns {engine, smoke, loadtest, slo} for release.json.
    `profile` (arith | generic, `lifecycle.models.task_profile` of the artifact) picks the smoke test and the
    Locust prompt set."""
    from perf.loadtest.run import check_slos, parse_slos, run_loadtest
    from perf.bench.runner import BenchConfig, Server

    slos = parse_slos(opts["slo"])
    bench_cfg = BenchConfig(models=[str(path)], engine=opts["engine"], bandwidth=False, output="")
    workdir = Path(tempfile.mkdtemp(prefix="ship-deploy-"))
    log(f"deploy: `lifecycle serve --engine {opts['engine']}` on {name}")
    server = Server(name, str(path), bench_cfg, workdir)
    try:
        server.wait_ready(float(opts["startup_timeout_s"]))
        log(f"  ready in {server.load_s:.1f} s at {server.url}")
        smoke = smoke_test(server.url, name, profile=profile)
        log(f"  smoke test ({profile}): status {smoke.get('status')} reply {smoke.get('reply', smoke.get('error'))!r}"
            + (f" checks {smoke['checks']}" if "checks" in smoke else ""))
        if not smoke["ok"]:
            raise UserError(f"deploy smoke test failed against {server.url}: {smoke.get('error') or smoke}")
        summary = run_loadtest(server.url, int(opts["users"]), float(opts["spawn_rate"]), str(opts["duration"]),
                               out, model=name, prompt_set=profile)
    finally:
        server.stop()
    checks = check_slos(summary, slos)
    log(f"  loadtest: {summary.get('requests')} requests, {summary.get('rps', 0):.1f} rps, "
        f"p95 {summary.get('p95_ms')} ms, failures {summary.get('failures')}")
    keep = ("users", "duration_s", "requests", "failures", "error_rate", "rps", "p50_ms", "p95_ms", "p99_ms",
            "ttft_p95_ms", "prompt_set")
    return {"engine": opts["engine"], "artifact": name, "load_s": round(server.load_s, 2), "smoke": smoke,
            "loadtest": {k: summary.get(k) for k in keep}, "slo": checks}
