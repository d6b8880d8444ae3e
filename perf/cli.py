"""`lifecycle bench` and `lifecycle loadtest`: speed and memory per artifact, and Locust load with SLOs.

    lifecycle bench --model tiny-arith --model runs/merged --concurrency 1,4,16 --output bench/results.json
    lifecycle bench --endpoint http://127.0.0.1:8000 --slo ttft_ms=100,e2e_ms=500
    lifecycle loadtest --endpoint http://127.0.0.1:8000 --users 8 --spawn-rate 4 --duration 60s --slo p95_ms=500,error_rate=0.01

Heavy imports (locust, matplotlib, numpy, psutil) stay inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lifecycle.cli_common import ConfigOpt, SetOpt, epilog


def register(root: typer.Typer) -> None:
    """Add `bench` and `loadtest` to the root CLI."""

    @root.command(epilog=epilog("perf.bench.runner:BenchConfig"))
    def bench(
        model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="artifact dir or name (repeat to compare)")] = None,
        endpoint: Annotated[Optional[str], typer.Option(help="a running OpenAI-compatible server on this machine")] = None,
        concurrency: Annotated[Optional[str], typer.Option(help="levels, e.g. 1,4,16")] = None,
        num_prompts: Annotated[Optional[int], typer.Option(help="requests per level")] = None,
        engine: Annotated[Optional[str], typer.Option(help="local (one process) or ray (Ray Serve)")] = None,
        prompts: Annotated[Optional[str], typer.Option(help="JSONL prompt set instead of the built-in one")] = None,
        slo: Annotated[Optional[str], typer.Option(help="goodput SLOs: ttft_ms=..,tpot_ms=..,e2e_ms=..")] = None,
        eval: Annotated[Optional[list[str]], typer.Option("--eval", help="eval result JSON per --model (accuracy plot)")] = None,
        output: Annotated[Optional[Path], typer.Option("--output", "-o", help="result JSON; table and plots beside it")] = None,
        config: ConfigOpt = None, set: SetOpt = None,
    ) -> None:
        """Benchmark artifacts or an endpoint: TTFT, TPOT, ITL, E2E, throughput, goodput, RSS (vLLM definitions)."""
        from lifecycle.config import build
        from perf.bench.report import table, write_outputs
        from perf.bench.runner import BenchConfig, run

        cfg = build(BenchConfig, config, {"models": model, "endpoint": endpoint, "concurrency": concurrency,
                                          "num_prompts": num_prompts, "engine": engine, "prompts": prompts,
                                          "slo": slo, "eval": eval, "output": str(output) if output else None}, set)
        result = run(cfg)
        paths = write_outputs(result, cfg.output)
        print()
        print(table(result))
        bw = result["machine"]["memory_bandwidth_gbs"]
        for t in result["targets"]:
            if bw and t.get("weight_bytes"):
                lv = t["levels"][0]
                print(f"physical limit, {t['label']} at c={lv['concurrency']}: {lv['achieved_gbs']:.3f} GB/s of weights "
                      f"read ({t['weight_bytes'] / 2**20:.2f} MB x {lv['output_throughput']:.0f} tok/s) vs "
                      f"{bw:.1f} GB/s measured bandwidth ({100 * lv['achieved_gbs'] / bw:.2f}% of the bound)")
        print("wrote " + ", ".join(str(p) for p in paths))

    @root.command()
    def loadtest(
        endpoint: Annotated[str, typer.Option(help="OpenAI-compatible server on this machine, e.g. http://127.0.0.1:8000")],
        users: Annotated[int, typer.Option(help="concurrent Locust users (at most 1000)")] = 8,
        spawn_rate: Annotated[float, typer.Option(help="users started per second")] = 4.0,
        duration: Annotated[str, typer.Option(help="run time: 60s, 2m (at most 1h)")] = "60s",
        slo: Annotated[Optional[str], typer.Option(help="p50/p90/p95/p99/avg/max_ms, error_rate, failures, ttft_p50/p95/p99_ms, min_rps; e.g. p95_ms=500,error_rate=0.01")] = None,
        model: Annotated[str, typer.Option(help="served model name (default: first in /v1/models)")] = "",
        api_key_env: Annotated[str, typer.Option(help="env var holding the API key")] = "",
        task_weights: Annotated[str, typer.Option(help="request mix: chat=3,completion=2,stream=1")] = "chat=3,completion=2,stream=1",
        seed: Annotated[int, typer.Option(help="prompt mix seed")] = 0,
        max_tokens: Annotated[int, typer.Option(help="max_tokens per request")] = 16,
        prompts: Annotated[str, typer.Option(help="JSONL of {'prompt'} / {'messages'} instead of the built-in prompts")] = "",
        prompt_set: Annotated[str, typer.Option(help="built-in prompts: auto (sums when the served model is a local artifact of the arithmetic demo, else generic), arith or generic")] = "auto",
        output: Annotated[Optional[Path], typer.Option("--output", "-o", help="folder for CSV, HTML, locust.json and summary.json")] = None,
    ) -> None:
        """Locust load test (headless, own process) with SLO checks; exits 1 when an SLO is breached."""
        import datetime as dt

        from perf.loadtest.run import check_slos, parse_slos, run_loadtest, write_summary

        slos = parse_slos(slo)
        out = output or Path("loadtest-results") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        s = run_loadtest(endpoint, users, spawn_rate, duration, out, model=model, api_key_env=api_key_env,
                         task_weights=task_weights, seed=seed, max_tokens=max_tokens, prompts_file=prompts,
                         prompt_set=prompt_set)
        checks = check_slos(s, slos)
        path = write_summary(s, checks, out)

        def f(v) -> str:
            return "-" if v is None else f"{v:.0f}"

        print(f"{s['users']} users, {s['duration_s']} s: {s['requests']} requests, {s['rps']:.1f} req/s, "
              f"{s['failures']} failures ({100 * s['error_rate']:.2f}%), latency ms p50 {f(s['p50_ms'])} "
              f"p95 {f(s['p95_ms'])} p99 {f(s['p99_ms'])}, TTFT ms p50 {f(s['ttft_p50_ms'])} p95 {f(s['ttft_p95_ms'])}")
        for c in checks:
            v = "-" if c["measured"] is None else f"{c['measured']:.4g}"
            print(f"SLO {c['rule']}: measured {v} -> {'pass' if c['passed'] else 'BREACH'}")
        print(f"wrote {path} (CSV, HTML and locust.json beside it)")
        if any(not c["passed"] for c in checks):
            raise typer.Exit(1)
