"""`lifecycle bench` against real servers on 127.0.0.1: an artifact it starts itself, and an endpoint."""

import json

import pytest

from perf.bench import metrics as M

LATENCY_KEYS = ["mean_ms"] + [f"p{q}_ms" for q in M.PERCENTILES]
LEVEL_KEYS = {"concurrency", "requests", "completed", "errors", "wall_s", "output_tokens", "prompt_tokens",
              "request_throughput", "output_throughput", "ttft", "tpot", "itl", "e2e"}


def _check_level(lv: dict, n: int, tokens: int) -> None:
    assert LEVEL_KEYS <= set(lv)
    assert (lv["requests"], lv["completed"], lv["errors"]) == (n, n, 0)
    assert lv["output_tokens"] == n * tokens
    assert lv["request_throughput"] > 0 and lv["output_throughput"] > lv["request_throughput"]
    for key in M.LATENCIES:
        d = lv[key]
        assert set(d) == set(LATENCY_KEYS) and all(d[k] is not None and d[k] > 0 for k in LATENCY_KEYS), key
        assert d["p50_ms"] <= d["p90_ms"] <= d["p95_ms"] <= d["p99_ms"], key
    assert lv["ttft"]["p50_ms"] <= lv["e2e"]["p50_ms"]


@pytest.fixture(scope="module")
def mock_endpoint():
    from serve.app import build_app
    from serve.local import LocalBackend, ServerThread

    backend = LocalBackend.load([{"name": "slowmock", "path": "mock", "mock": {"delay_s": 0.005}}],
                                stream_interval_s=0.0)
    with ServerThread(build_app(backend)) as srv:
        yield srv


@pytest.mark.integration
def test_bench_artifact_starts_measures_and_stops(tmp_path):
    import psutil

    from perf.bench.report import write_outputs
    from perf.bench.runner import BenchConfig, run

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cfg = BenchConfig(models=["tiny-arith"], concurrency=[1, 2], num_prompts=6, output_len=8, warmup=1,
                      bandwidth=False, slo="e2e_ms=60000", output=str(tmp_path / "r.json"))
    result = run(cfg, progress=lambda *_: None)
    (t,) = result["targets"]
    assert t["label"] == "tiny-arith" and t["format"] == "hf" and t["errors"] == 0
    assert t["size_bytes"] > 1e6 and t["weight_bytes"] > 1e6 and t["load_s"] > 0
    assert t["rss_peak_mb"] >= t["rss_steady_mb"] > 50 and t["rss_idle_mb"] > 50
    for lv, c in zip(t["levels"], (1, 2)):
        assert lv["concurrency"] == c
        _check_level(lv, 6, 8)
        assert lv["rss_peak_mb"] >= lv["rss_steady_mb"] > 0 and lv["achieved_gbs"] > 0
        assert lv["goodput"]["good_requests"] == 6
    assert result["convention"] == M.CONVENTION and "tpot" in result["definitions"]
    # the server is gone afterwards
    assert {p.pid for p in psutil.Process().children(recursive=True)} - before == set()
    paths = write_outputs(result, cfg.output)
    assert all(p.is_file() for p in paths)


@pytest.mark.integration
def test_bench_endpoint_through_the_cli(tmp_path, mock_endpoint):
    from typer.testing import CliRunner

    from lifecycle.cli import app

    out = tmp_path / "e.json"
    res = CliRunner().invoke(app, ["bench", "--endpoint", mock_endpoint.url, "--concurrency", "1,4",
                                   "--num-prompts", "8", "--slo", "ttft_ms=1", "-o", str(out),
                                   "--set", "bandwidth=false", "--set", "output_len=5"])
    assert res.exit_code == 0, res.output
    assert "| slowmock | 4 |" in res.output
    data = json.loads(out.read_text())
    (t,) = data["targets"]
    assert t["kind"] == "endpoint" and t["label"] == "slowmock"
    for lv in t["levels"]:
        _check_level(lv, 8, 5)
        assert lv["goodput"]["good_requests"] == 0  # a 1 ms TTFT is out of reach
        assert lv["tpot"]["p50_ms"] >= 4  # 5 ms per token on the server
    assert (tmp_path / "e-latency.png").is_file() and (tmp_path / "e.md").is_file()


@pytest.mark.unit
def test_bench_refuses_a_remote_endpoint(tmp_path):
    from typer.testing import CliRunner

    from lifecycle.cli import app
    from lifecycle.errors import UserError

    res = CliRunner().invoke(app, ["bench", "--endpoint", "http://8.8.8.8:80", "-o", str(tmp_path / "x.json"),
                                   "--set", "bandwidth=false"])
    assert isinstance(res.exception, UserError) and "not this machine" in str(res.exception)
