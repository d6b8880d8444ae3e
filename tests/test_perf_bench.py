"""Benchmark metrics (vLLM definitions), prompt seeding, memory sampling and the report: no model needed."""

import asyncio
import json
import subprocess
import sys
import time

import pytest

from lifecycle.errors import UserError
from perf.bench import metrics as M
from perf.prompts import prompt_set


@pytest.mark.unit
def test_tpot_ttft_itl_from_known_timings():
    r = M.RequestRecord(chunk_times=[0.1, 0.2, 0.35], e2e=0.4, output_tokens=4)
    assert r.ttft == 0.1
    assert r.tpot == pytest.approx((0.4 - 0.1) / (4 - 1))
    assert r.itl == pytest.approx([0.1, 0.15])
    assert M.RequestRecord(chunk_times=[0.1], e2e=0.1, output_tokens=1).tpot is None


@pytest.mark.unit
def test_percentiles_match_numpy_and_are_ordered():
    np = pytest.importorskip("numpy")
    vals = [0.013, 0.2, 0.05, 0.4, 0.07, 0.09, 1.5, 0.011]
    for q in (50, 90, 95, 99):
        assert M.percentile(vals, q) == pytest.approx(float(np.percentile(vals, q)))
    d = M.distribution(vals)
    assert d["p50_ms"] <= d["p90_ms"] <= d["p95_ms"] <= d["p99_ms"]
    assert d["mean_ms"] == pytest.approx(1000 * sum(vals) / len(vals))


@pytest.mark.unit
def test_summarize_throughput_errors_goodput():
    recs = [M.RequestRecord([0.05, 0.1], 0.2, 5), M.RequestRecord([0.3, 0.4], 0.9, 5),
            M.RequestRecord(error="HTTP 500: boom")]
    s = M.summarize(recs, wall_s=2.0, slo={"ttft_ms": 100, "e2e_ms": 500})
    assert (s["completed"], s["errors"], s["output_tokens"]) == (2, 1, 10)
    assert s["request_throughput"] == 1.0 and s["output_throughput"] == 5.0
    assert s["goodput"]["good_requests"] == 1 and s["goodput"]["requests_per_s"] == 0.5
    assert s["tpot"]["p50_ms"] == pytest.approx(1000 * ((0.15 / 4) + (0.6 / 4)) / 2)
    with pytest.raises(UserError, match="ttft_ms"):
        M.parse_slo("p95=3")


@pytest.mark.integration
def test_client_on_a_fake_stream_with_known_delays():
    """The real client against an SSE stream whose chunks arrive 50 ms apart."""
    from aiohttp import web

    from perf.bench.client import run

    async def handler(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for text in ("a", "b", "c"):
            await asyncio.sleep(0.05)
            await resp.write(f"data: {json.dumps({'choices': [{'text': text}]})}\n\n".encode())
        await asyncio.sleep(0.05)
        usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 6}}
        await resp.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        return resp

    async def main():
        app = web.Application()
        app.router.add_post("/v1/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            return await run({"url": f"http://127.0.0.1:{port}", "model": "m", "concurrency": 2,
                              "prompts": [{"prompt": "x", "max_tokens": 6}] * 2})
        finally:
            await runner.cleanup()

    out = asyncio.run(main())
    for d in out["records"]:
        r = M.RequestRecord.from_dict(d)
        assert r.ok and r.output_tokens == 6 and r.prompt_tokens == 3 and len(r.chunk_times) == 3
        assert 0.04 <= r.ttft < 0.5
        assert all(0.03 <= g < 0.5 for g in r.itl)
        assert r.e2e >= r.chunk_times[-1] + 0.03
        assert r.tpot == pytest.approx((r.e2e - r.ttft) / 5)


@pytest.mark.unit
def test_prompt_set_is_seeded_and_sized(tmp_path):
    a, b = prompt_set(8, 30, 12, seed=1), prompt_set(8, 30, 12, seed=1)
    assert a == b and a != prompt_set(8, 30, 12, seed=2)
    assert all(len(p["prompt"]) == 30 and p["prompt"].endswith("=") and p["max_tokens"] == 12 for p in a)
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps({"prompt": f"q{i}"}) for i in range(10)) + "\n"
                 + json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}) + "\n")
    x = prompt_set(5, path=f, seed=3)
    assert x == prompt_set(5, path=f, seed=3) and len(x) == 5
    assert len(prompt_set(20, path=f, seed=0)) == 20
    f.write_text('{"text": 1}\n')
    with pytest.raises(UserError, match="p.jsonl:1"):
        prompt_set(2, path=f)


@pytest.mark.unit
def test_memory_sampler_sums_a_child_process_tree():
    """A child that starts a grandchild holding ~60 MB: the tree's RSS includes the grandchild."""
    import psutil

    from perf.bench.memory import RssSampler, tree_rss

    code = ("import subprocess, sys, time; "
            "g = subprocess.Popen([sys.executable, '-c', 'b = bytearray(60 * 2**20); import time; time.sleep(30)']); "
            "time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        proc = psutil.Process(child.pid)
        deadline = time.time() + 20
        while time.time() < deadline and not (proc.children() and proc.children()[0].memory_info().rss > 60 * 2**20):
            time.sleep(0.1)
        (grand,) = proc.children()
        own = proc.memory_info().rss
        total = tree_rss(child.pid)
        assert total >= own + 60 * 2**20
        with RssSampler(child.pid, interval_s=0.05) as s:
            s.mark("load")
            time.sleep(0.3)
            s.mark(None)
        assert s.peak_bytes >= s.steady_bytes("load") >= 60 * 2**20
        assert tree_rss(grand.pid) < total
    finally:
        for p in psutil.Process(child.pid).children(recursive=True):
            p.kill()
        child.kill()
        child.wait()


@pytest.mark.unit
def test_bandwidth_and_weight_bytes(base_artifact):
    from perf.bench.limits import achieved_gbs, memory_bandwidth_gbs, weight_bytes

    assert memory_bandwidth_gbs(mb=16, repeats=2) > 0.1
    w = weight_bytes(base_artifact.path)
    assert 1e6 < w <= base_artifact.size_bytes()
    assert achieved_gbs(w, 100.0) == pytest.approx(w * 100 / 1e9)


@pytest.mark.unit
def test_only_local_endpoints_and_config_checks():
    from perf.bench.runner import BenchConfig
    from perf.endpoint import check_local

    check_local("http://127.0.0.1:8000")
    check_local("http://localhost:1")
    with pytest.raises(UserError, match="not this machine"):
        check_local("http://8.8.8.8:80")
    with pytest.raises(UserError, match="either"):
        BenchConfig(models=["tiny-arith"], endpoint="http://127.0.0.1:1")
    assert BenchConfig(endpoint="http://127.0.0.1:1", concurrency="1,8").concurrency == [1, 8]
    with pytest.raises(UserError, match="concurrency"):
        BenchConfig(endpoint="http://127.0.0.1:1", concurrency="1,x")


def _fake_result(tmp_path):
    def level(c):
        d = {"mean_ms": 10.0 * c, "p50_ms": 9.0 * c, "p90_ms": 12.0 * c, "p95_ms": 13.0 * c, "p99_ms": 15.0 * c}
        return {"concurrency": c, "requests": 4, "completed": 4, "errors": 0, "output_throughput": 100.0 * c,
                "request_throughput": 5.0 * c, "ttft": d, "tpot": d, "itl": d, "e2e": d, "rss_peak_mb": 500.0,
                "rss_steady_mb": 490.0, "achieved_gbs": 0.2 * c}
    targets = [{"label": n, "kind": "artifact", "format": "hf", "engine": "local", "size_bytes": s, "weight_bytes": s,
                "load_s": 3.0, "rss_idle_mb": 480.0, "rss_peak_mb": 500.0, "rss_steady_mb": 490.0, "errors": 0,
                "accuracy": acc, "accuracy_metric": "arith/exact_match", "levels": [level(1), level(4)]}
               for n, s, acc in (("a", 2_000_000, 0.9), ("b", 1_000_000, 0.8))]
    return {"convention": M.CONVENTION, "machine": {"memory_bandwidth_gbs": 10.0},
            "settings": {"concurrency": [1, 4]}, "targets": targets}


@pytest.mark.unit
def test_report_table_and_plots(tmp_path):
    from perf.bench.report import table, write_outputs

    result = _fake_result(tmp_path)
    md = table(result)
    assert "vLLM benchmarks/serve.py" in md and "| a | 4 |" in md and "| b | 1 |" in md
    paths = write_outputs(result, tmp_path / "r.json")
    assert [p.name for p in paths] == ["r.json", "r.md", "r-latency.png", "r-throughput.png", "r-tradeoff.png"]
    assert all(p.stat().st_size > 0 for p in paths)
    assert paths[2].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(paths[0].read_text())["targets"][1]["label"] == "b"


@pytest.mark.unit
def test_example_config_loads():
    from pathlib import Path

    from lifecycle.config import build
    from perf.bench.runner import BenchConfig

    path = Path(__file__).parents[1] / "configs" / "bench-release.yaml"
    assert path.read_text().startswith("# lifecycle bench --config configs/bench-release.yaml")
    cfg = build(BenchConfig, path, sets=["concurrency=1,2"])
    assert cfg.models[0] == "tiny-arith" and cfg.concurrency == [1, 2]
    assert M.parse_slo(cfg.slo) == {"ttft_ms": 200, "tpot_ms": 50, "e2e_ms": 1000}
