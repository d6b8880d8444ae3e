"""The optional deploy stage of `lifecycle ship`: serve the release's artifact, smoke test it through the
OpenAI API, and hold it to the load-test SLOs with Locust. A live check, so it is never cached.

    deploy: {enabled: true, engine: ray, users: 4, spawn_rate: 4, duration: 10s, slo: "p95_ms=2000,error_rate=0"}
"""

from __future__ import annotations

import json
import tempfile
import urllib.request
from pathlib import Path

from lifecycle.errors import UserError


def smoke_test(url: str, model: str, timeout_s: float = 60.0) -> dict:
    """One chat completion with a known answer; the reply must parse and carry the sum."""
    from lifecycle.data.synth import extract_answer

    body = {"model": model, "messages": [{"role": "user", "content": "What is 12+30?"}], "max_tokens": 16,
            "temperature": 0}
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            status, data = resp.status, json.loads(resp.read())
    except (OSError, ValueError) as e:
        return {"ok": False, "status": None, "error": str(e)}
    text = data.get("choices", [{}])[0].get("message", {}).get("content", "")
    return {"ok": status == 200 and bool(text), "status": status, "reply": text,
            "correct": extract_answer(text) == 42}


def run(name: str, path: Path, opts: dict, out: Path, log) -> dict:
    """Serve `path` as `name`, smoke test, load test; returns {engine, smoke, loadtest, slo} for release.json."""
    from loadtest.run import check_slos, parse_slos, run_loadtest
    from serve.bench.runner import BenchConfig, Server

    slos = parse_slos(opts["slo"])
    bench_cfg = BenchConfig(models=[str(path)], engine=opts["engine"], bandwidth=False, output="")
    workdir = Path(tempfile.mkdtemp(prefix="ship-deploy-"))
    log(f"deploy: `lifecycle serve --engine {opts['engine']}` on {name}")
    server = Server(name, str(path), bench_cfg, workdir)
    try:
        server.wait_ready(float(opts["startup_timeout_s"]))
        log(f"  ready in {server.load_s:.1f} s at {server.url}")
        smoke = smoke_test(server.url, name)
        log(f"  smoke test: status {smoke.get('status')} reply {smoke.get('reply', smoke.get('error'))!r}")
        if not smoke["ok"]:
            raise UserError(f"deploy smoke test failed against {server.url}: {smoke.get('error') or smoke}")
        summary = run_loadtest(server.url, int(opts["users"]), float(opts["spawn_rate"]), str(opts["duration"]),
                               out, model=name)
    finally:
        server.stop()
    checks = check_slos(summary, slos)
    log(f"  loadtest: {summary.get('requests')} requests, {summary.get('rps', 0):.1f} rps, "
        f"p95 {summary.get('p95_ms')} ms, failures {summary.get('failures')}")
    keep = ("users", "duration_s", "requests", "failures", "error_rate", "rps", "p50_ms", "p95_ms", "p99_ms",
            "ttft_p95_ms")
    return {"engine": opts["engine"], "artifact": name, "load_s": round(server.load_s, 2), "smoke": smoke,
            "loadtest": {k: summary.get(k) for k in keep}, "slo": checks}
