"""`lifecycle loadtest`: Locust in a subprocess against a real app on 127.0.0.1, summary and SLO checks.

Locust is never imported here: its gevent patching would break Ray and torch in the test process.
"""

import json
import re
import shutil
import urllib.request

import pytest

from lifecycle.errors import UserError
from lifecycle.extras import install_hint
from perf.loadtest.run import check_slos, hist_percentile, parse_duration, parse_slos, summarize

needs_locust = pytest.mark.skipif(shutil.which("locust") is None, reason=install_hint("locust"))


def _entry(name, method, times, fails=0):
    hist = {}
    for t in times:
        hist[str(t)] = hist.get(str(t), 0) + 1
    return {"name": name, "method": method, "num_requests": len(times), "num_failures": fails,
            "total_response_time": float(sum(times)), "max_response_time": float(max(times)),
            "response_times": hist, "start_time": 100.0, "last_request_timestamp": 110.0}


@pytest.mark.unit
def test_summary_percentiles_and_slo_rules():
    entries = [_entry("/v1/models", "GET", [500]), _entry("chat", "POST", [10, 20, 30, 40], fails=1),
               _entry("completion", "POST", [50, 60, 70, 80, 90, 100]), _entry("TTFT stream chat", "TTFT", [5, 7])]
    s = summarize(entries, users=2, duration_s=10)
    assert (s["requests"], s["failures"]) == (10, 1) and s["error_rate"] == pytest.approx(0.1)
    assert s["rps"] == pytest.approx(1.0) and s["max_ms"] == 100
    assert (s["p50_ms"], s["p90_ms"], s["p99_ms"]) == (50, 90, 100)
    assert s["ttft_requests"] == 2 and s["ttft_p95_ms"] == 7
    checks = check_slos(s, parse_slos("p50_ms=60,error_rate=0.05,min_rps=0.5"))
    assert [c["passed"] for c in checks] == [True, False, True]
    assert checks[1]["rule"] == "error_rate <= 0.05" and checks[1]["measured"] == pytest.approx(0.1)
    assert hist_percentile({}, 50) is None


@pytest.mark.unit
def test_argument_checks():
    assert parse_duration("60s") == 60 and parse_duration("1m30s") == 90 and parse_duration("5") == 5
    for bad in ("2d", "", "0s", "2h"):
        with pytest.raises(UserError):
            parse_duration(bad)
    with pytest.raises(UserError, match="p95_ms=500"):
        parse_slos("latency=3")


def _server(delay_s: float):
    from serve.app import build_app
    from serve.local import LocalBackend, ServerThread

    backend = LocalBackend.load([{"name": "m", "path": "mock", "mock": {"delay_s": delay_s}}])
    return ServerThread(build_app(backend))


def _served_requests(url: str) -> int:
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    found = re.findall(r'lifecycle_requests_total\{route="/v1/(?:chat/)?completions",status="\d+"\} (\S+)', text)
    return int(sum(float(v) for v in found))


@needs_locust
@pytest.mark.integration
def test_short_locust_run_counts_match_the_server(tmp_path):
    from perf.loadtest.run import run_loadtest, write_summary

    with _server(0.001) as srv:
        s = run_loadtest(srv.url, users=3, spawn_rate=3, duration="4s", out=tmp_path, max_tokens=4, seed=1)
        served = _served_requests(srv.url)
    assert s["requests"] > 10 and s["failures"] == 0
    assert s["requests"] == served  # every request Locust counted reached the server, and no more
    assert set(s["by_name"]) >= {"chat", "completion", "stream chat", "TTFT stream chat"}
    assert s["ttft_requests"] == s["by_name"]["stream chat"]["requests"] > 0
    assert s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"]
    checks = check_slos(s, parse_slos("error_rate=0.01,p95_ms=10000"))
    assert all(c["passed"] for c in checks)
    path = write_summary(s, checks, tmp_path)
    assert json.loads(path.read_text())["slo"][0]["passed"]
    for name in ("locust.json", "locust_stats.csv", "report.html"):
        assert (tmp_path / name).stat().st_size > 0


@needs_locust
@pytest.mark.integration
def test_slo_breach_on_a_slow_server_exits_nonzero(tmp_path):
    from typer.testing import CliRunner

    from lifecycle.cli import app

    with _server(0.05) as srv:  # 50 ms per token, 4 tokens: every request takes >= 200 ms
        res = CliRunner().invoke(app, ["loadtest", "--endpoint", srv.url, "--users", "2", "--spawn-rate", "2",
                                       "--duration", "3s", "--max-tokens", "4", "--slo", "error_rate=0.01,p95_ms=100",
                                       "-o", str(tmp_path)])
    assert res.exit_code == 1, res.output
    assert "SLO error_rate <= 0.01: measured 0 -> pass" in res.output
    m = re.search(r"SLO p95_ms <= 100: measured (\d+) -> BREACH", res.output)
    assert m and int(m.group(1)) >= 200
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [c["passed"] for c in summary["slo"]] == [True, False]


@pytest.mark.unit
def test_loadtest_refuses_remote_and_unbounded(tmp_path):
    from perf.loadtest.run import run_loadtest

    with pytest.raises(UserError, match="not this machine"):
        run_loadtest("http://8.8.8.8:80", 1, 1, "1s", tmp_path)
    with pytest.raises(UserError, match="users"):
        run_loadtest("http://127.0.0.1:9", 5000, 1, "1s", tmp_path)
