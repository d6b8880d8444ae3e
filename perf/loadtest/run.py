"""Run Locust headless in a subprocess, summarize its final `--json` figures, and check SLOs.

    summary = run_loadtest("http://127.0.0.1:8000", users=8, spawn_rate=4, duration="60s", out=Path("lt"))
    breaches = [c for c in check_slos(summary, parse_slos("p95_ms=500,error_rate=0.01")) if not c["passed"]]

Locust patches the standard library with gevent on import, which breaks Ray and torch in the same
process, so it always runs as `python -m locust`. The final figures come from `--json-file` (Locust's
end-of-run stats; the CSV keeps only the last periodic snapshot). Percentiles are computed from
Locust's response-time histogram, whose buckets round to 2 significant digits above 100 ms.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from lifecycle.atomic import OWNER_ONLY, write_text_atomic
from lifecycle.errors import UserError

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
MAX_USERS, MAX_SECONDS = 1000, 3600
TTFT_TYPE = "TTFT"
# SLO key -> (summary key, "max" = the measured value must not exceed the limit, "min" = must reach it)
SLO_RULES = {
    "p50_ms": ("p50_ms", "max"), "p90_ms": ("p90_ms", "max"), "p95_ms": ("p95_ms", "max"),
    "p99_ms": ("p99_ms", "max"), "avg_ms": ("avg_ms", "max"), "max_ms": ("max_ms", "max"),
    "error_rate": ("error_rate", "max"), "failures": ("failures", "max"),
    "ttft_p50_ms": ("ttft_p50_ms", "max"), "ttft_p95_ms": ("ttft_p95_ms", "max"),
    "ttft_p99_ms": ("ttft_p99_ms", "max"), "min_rps": ("rps", "min"),
}


def parse_duration(text: str) -> int:
    """'60s', '2m', '1h30m' or '45' -> seconds (1..3600)."""
    t = text.strip().lower()
    if t.isdigit():
        secs = int(t)
    else:
        parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", t)
        if not parts or not any(parts.groups()):
            raise UserError(f"--duration {text!r} is not a time like 60s, 2m or 1h30m")
        h, m, s = (int(g or 0) for g in parts.groups())
        secs = 3600 * h + 60 * m + s
    if not 1 <= secs <= MAX_SECONDS:
        raise UserError(f"--duration must be 1 s to {MAX_SECONDS // 60} min, got {text}")
    return secs


def parse_slos(text: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        k, sep, v = part.partition("=")
        if not sep or k.strip() not in SLO_RULES:
            raise UserError(f"SLO '{part}' is not KEY=VALUE with KEY in {', '.join(SLO_RULES)}; e.g. --slo p95_ms=500")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise UserError(f"SLO '{part}': {v!r} is not a number") from None
    return out


def hist_percentile(hist: dict[int, int], q: float) -> float | None:
    """Locust's rule: the smallest recorded time with at least q% of requests at or below it."""
    total = sum(hist.values())
    if not total:
        return None
    need, seen = q / 100 * total, 0
    for ms in sorted(hist):
        seen += hist[ms]
        if seen >= need:
            return float(ms)
    return float(max(hist))


def _stats(entries: list[dict]) -> dict:
    hist: dict[int, int] = {}
    for e in entries:
        for k, n in e.get("response_times", {}).items():
            hist[int(float(k))] = hist.get(int(float(k)), 0) + n
    n = sum(e["num_requests"] for e in entries)
    fails = sum(e["num_failures"] for e in entries)
    return {"requests": n, "failures": fails, "error_rate": fails / n if n else 0.0,
            "avg_ms": sum(e["total_response_time"] for e in entries) / n if n else None,
            "max_ms": max((e["max_response_time"] for e in entries if e["num_requests"]), default=None),
            **{f"p{q}_ms": hist_percentile(hist, q) for q in (50, 90, 95, 99)}}


def summarize(entries: list[dict], users: int, duration_s: float) -> dict:
    """Totals over the real requests (model list and TTFT entries apart), per-entry stats, and TTFT."""
    real = [e for e in entries if e["method"] != TTFT_TYPE and e["name"] != "/v1/models"]
    ttft = [e for e in entries if e["method"] == TTFT_TYPE]
    starts = [e["start_time"] for e in real if e["num_requests"]]
    ends = [e["last_request_timestamp"] for e in real if e["num_requests"] and e["last_request_timestamp"]]
    span = (max(ends) - min(starts)) if starts and ends else 0.0
    total = _stats(real)
    out = {"users": users, "duration_s": duration_s, "measured_s": span, **total,
           "rps": total["requests"] / span if span > 0 else 0.0,
           "by_name": {e["name"]: _stats([e]) for e in entries}}
    t = _stats(ttft)
    out |= {"ttft_requests": t["requests"], "ttft_p50_ms": t["p50_ms"], "ttft_p95_ms": t["p95_ms"],
            "ttft_p99_ms": t["p99_ms"]}
    return out


def check_slos(summary: dict, slos: dict[str, float]) -> list[dict]:
    checks = []
    for key, limit in slos.items():
        field, kind = SLO_RULES[key]
        v = summary.get(field)
        ok = v is not None and (v <= limit if kind == "max" else v >= limit)
        op = "<=" if kind == "max" else ">="
        checks.append({"rule": f"{key} {op} {limit:g}", "measured": v, "passed": ok})
    return checks


def prompt_set_for(endpoint: str, choice: str = "auto", model: str = "", api_key_env: str = "") -> str:
    """arith | generic: `choice` as given, or for 'auto' the task profile of the served model (named, or the
    first in /v1/models) when it is a local artifact; generic when the model is unknown."""
    from perf.prompts import choose_kind

    if choice != "auto":
        return choose_kind(choice)
    if not model:
        import os

        from perf.endpoint import get_json

        key = os.environ.get(api_key_env, "") if api_key_env else ""
        status, found = get_json(endpoint.rstrip("/") + "/v1/models", 10, key)
        model = (found.get("data") or [{}])[0].get("id", "") if status == 200 else ""
    return choose_kind("auto", model or None)


def run_loadtest(endpoint: str, users: int, spawn_rate: float, duration: str, out: Path, *, model: str = "",
                 api_key_env: str = "", task_weights: str = "chat=3,completion=2,stream=1", seed: int = 0,
                 max_tokens: int = 16, prompts_file: str = "", prompt_set: str = "auto",
                 locustfile: Path = LOCUSTFILE) -> dict:
    """Run Locust headless against a local endpoint; writes CSV, HTML, locust.json and summary.json to `out`.
    `prompt_set` (auto | arith | generic) picks the built-in prompts when no `prompts_file` is given."""
    from perf.endpoint import check_local

    check_local(endpoint)
    if not 1 <= users <= MAX_USERS:
        raise UserError(f"--users must be 1-{MAX_USERS}, got {users}")
    if spawn_rate <= 0:
        raise UserError("--spawn-rate must be > 0 (users started per second)")
    secs = parse_duration(duration)
    kind = "file" if prompts_file else prompt_set_for(endpoint, prompt_set, model, api_key_env)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--host", endpoint.rstrip("/"), "--headless",
           "-u", str(users), "-r", str(spawn_rate), "-t", f"{secs}s", "--stop-timeout", "10", "--only-summary",
           "--json-file", str(out / "locust"), "--csv", str(out / "locust"), "--html", str(out / "report.html"),
           "--task-weights", task_weights, "--prompt-seed", str(seed), "--max-tokens", str(max_tokens)]
    cmd += ["--model", model] if model else []
    cmd += ["--api-key-env", api_key_env] if api_key_env else []
    cmd += ["--prompts-file", prompts_file] if prompts_file else ["--prompt-set", kind]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 90)
    except subprocess.TimeoutExpired:
        raise UserError(f"locust did not finish within {secs + 90} s; see {out}") from None
    write_text_atomic(out / "locust.log", proc.stdout + proc.stderr, mode=OWNER_ONLY)
    json_path = out / "locust.json"
    if not json_path.is_file():
        raise UserError(f"locust wrote no results (exit {proc.returncode}); its output: {out / 'locust.log'}")
    summary = summarize(json.loads(json_path.read_text()), users, secs)
    summary |= {"endpoint": endpoint, "spawn_rate": spawn_rate, "locust_exit": proc.returncode, "prompt_set": kind}
    return summary


def write_summary(summary: dict, checks: list[dict], out: Path) -> Path:
    path = out / "summary.json"
    write_text_atomic(path, json.dumps(summary | {"slo": checks}, indent=2) + "\n", mode=OWNER_ONLY)
    return path
