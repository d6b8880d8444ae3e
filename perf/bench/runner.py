"""Run a benchmark: for each artifact start `lifecycle serve` on 127.0.0.1, measure each concurrency
level with the streaming client (its own process), sample the server's RSS, stop it.

    from perf.bench.runner import BenchConfig, run
    result = run(BenchConfig(models=["tiny-arith"], concurrency=[1, 4]))
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from lifecycle.config import field
from lifecycle.errors import UserError
from perf.bench import metrics as M
from perf.endpoint import check_local, get_json

DEFINITIONS = {
    "ttft": "request sent -> first streamed chunk with text",
    "tpot": "(E2E - TTFT) / (output tokens - 1), per request",
    "itl": "gaps between consecutive streamed chunks (a chunk may hold several tokens)",
    "e2e": "request sent -> last byte",
    "request_throughput": "completed requests / wall time of the level",
    "output_throughput": "output tokens / wall time of the level",
    "goodput": "completed requests meeting every SLO / wall time",
    "rss": "summed RSS of the serving process tree (and Ray's processes); steady = median under load",
    "load_s": "server process start -> /health ready",
    "achieved_gbs": "weight bytes x output tokens/s (every token reads every weight once at batch 1)",
}


@dataclass
class BenchConfig:
    models: list = field([], help="artifacts to benchmark (dir, built-in or store name); each gets its own server")
    endpoint: str = field("", help="benchmark a running OpenAI-compatible server instead (this machine only)")
    served_model: str = field("", help="model name at --endpoint (default: the first in /v1/models)")
    engine: str = field("local", help="serving backend for artifacts (serve/backends.py): local (one process) or ray "
                                      "(Ray Serve, ~20 s to start)")
    concurrency: list = field([1, 4, 16], help="concurrency levels (requests in flight)")
    num_prompts: int = field(32, help="requests per level; more gives steadier tails, takes longer")
    input_len: int = field(24, help="built-in prompts: characters per prompt (sums: exactly, about a token each; "
                                    "generic chats: shorter messages get generic context before them, see perf.prompts)")
    prompt_set: str = field("auto", help="built-in prompts without --prompts: auto (sums for the built-in arithmetic "
                                         "lineage, generic chats for any other model), arith or generic")
    output_len: int = field(16, help="max_tokens per request (the built-in model rarely stops earlier on raw sums)")
    prompts: str = field("", help="JSONL of {'prompt'} or {'messages'} instead of the built-in prompts")
    seed: int = field(0, help="prompt set seed")
    warmup: int = field(2, help="unmeasured requests before each level")
    slo: str = field("", help="goodput SLOs, e.g. ttft_ms=100,tpot_ms=20,e2e_ms=500")
    api_key_env: str = field("", help="env var holding the endpoint's API key")
    request_timeout_s: float = field(120.0, help="one request's limit (counted as an error above it)")
    startup_timeout_s: float = field(180.0, help="give up when a server is not ready after this long")
    stream_interval_ms: float = field(20.0, help="server-side chunk merging window (see lifecycle serve)")
    bandwidth: bool = field(True, help="measure memory bandwidth (a 256 MB copy) for the physical-limit line")
    output: str = field("bench/results.json", help="result JSON; the table (.md) and PNG plots go beside it")
    eval: list = field([], help="eval result JSONs, one per --model in order, for the size/accuracy/speed plot")
    accuracy_metric: str = field("", help="metric key in the eval JSONs (default: the first ending in exact_match)")

    def __post_init__(self) -> None:
        for name in ("models", "eval"):  # `--set models=a,b` arrives as one string
            if isinstance(getattr(self, name), str):
                setattr(self, name, [v.strip() for v in getattr(self, name).split(",") if v.strip()])
        if bool(self.models) == bool(self.endpoint):
            raise UserError("give either --model DIR (repeatable) or --endpoint URL")
        from serve.backends import backend

        backend(self.engine)  # an unknown name lists the known ones
        if isinstance(self.concurrency, (str, int)):
            self.concurrency = str(self.concurrency).split(",")
        try:
            self.concurrency = [int(c) for c in self.concurrency]
        except ValueError:
            raise UserError(f"concurrency must be integers like 1,4,16, got {self.concurrency!r}") from None
        if not self.concurrency or min(self.concurrency) < 1 or max(self.concurrency) > 256:
            raise UserError("concurrency levels must be 1-256, e.g. --concurrency 1,4,16")
        if not 1 <= self.num_prompts <= 10000:
            raise UserError("num_prompts must be 1-10000")
        if self.eval and len(self.eval) != len(self.models):
            raise UserError(f"--eval needs one file per --model ({len(self.models)}), got {len(self.eval)}")
        M.parse_slo(self.slo)
        if self.prompt_set not in ("auto", "arith", "generic"):
            raise UserError(f"prompt_set must be auto, arith or generic, got {self.prompt_set!r}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`lifecycle serve` in a subprocess on 127.0.0.1; `load_s` = start -> /health 200."""

    def __init__(self, name: str, path: str, cfg: BenchConfig, workdir: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        from serve.backends import backend

        self.ray_dir = tempfile.mkdtemp(prefix="bn", dir="/tmp") if backend(cfg.engine).own_temp_dir else None
        cmd = [sys.executable, "-m", "lifecycle.cli", "serve", "--model", f"{name}={path}", "--engine", cfg.engine,
               "--host", "127.0.0.1", "--port", str(self.port), "--set", "threads=1",
               "--set", f"stream_interval_ms={cfg.stream_interval_ms}",
               "--set", f"request_timeout_s={cfg.request_timeout_s}"]
        if self.ray_dir:
            cmd += ["--set", f"ray_temp_dir={self.ray_dir}", "--set", "object_store_mb=100"]
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
        self.log = workdir / f"server-{name}.log"
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.load_s = 0.0

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if get_json(self.url + "/health", 2)[0] == 200:
                self.load_s = time.perf_counter() - self.t0
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        tail = self.log.read_text()[-800:] if self.log.is_file() else ""
        self.stop()
        raise UserError(f"the server did not become ready within {timeout_s:.0f} s; its log ends:\n{tail}")

    def stop(self) -> None:
        """SIGTERM (drains), then SIGKILL; under Ray also the session's leftover processes."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.ray_dir:
            import psutil

            for p in psutil.process_iter(["cmdline"]):
                if self.ray_dir in " ".join(p.info["cmdline"] or []):
                    try:
                        p.kill()
                    except psutil.NoSuchProcess:
                        pass
            shutil.rmtree(self.ray_dir, ignore_errors=True)


def run_level(url: str, model: str, c: int, prompts: list[dict], cfg: BenchConfig, workdir: Path) -> dict:
    """One concurrency level in a client subprocess -> summary dict."""
    spec = {"url": url, "model": model, "concurrency": c, "prompts": prompts, "warmup": cfg.warmup,
            "api_key_env": cfg.api_key_env, "timeout_s": cfg.request_timeout_s}
    spec_path, out_path = workdir / f"spec-{c}.json", workdir / f"records-{c}.json"
    spec_path.write_text(json.dumps(spec))
    budget = cfg.request_timeout_s * (len(prompts) / c + cfg.warmup + 2)
    proc = subprocess.run([sys.executable, "-m", "perf.bench.client", str(spec_path), str(out_path)],
                          capture_output=True, text=True, timeout=budget, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"bench client failed: {proc.stderr[-800:]}")
    data = json.loads(out_path.read_text())
    records = [M.RequestRecord.from_dict(r) for r in data["records"]]
    return {"concurrency": c, **M.summarize(records, data["wall_s"], M.parse_slo(cfg.slo))}


def _measure(url: str, model: str, prompts: list[dict], cfg: BenchConfig, workdir: Path, sampler=None,
             progress=print, server: "Server | None" = None) -> list[dict]:
    levels = []
    for c in cfg.concurrency:
        if server and server.proc.poll() is not None:
            progress(f"  the server exited (code {server.proc.returncode}) before c={c}; see {server.log}")
            break
        if sampler:
            sampler.mark(f"c={c}")
        lv = run_level(url, model, c, prompts, cfg, workdir)
        if sampler:
            sampler.mark(None)
            lv["rss_peak_mb"] = sampler.peak_for(f"c={c}") / 2**20
            lv["rss_steady_mb"] = sampler.steady_bytes(f"c={c}") / 2**20
        progress(f"  c={c:<3d} {lv['output_throughput']:8.1f} tok/s  {lv['request_throughput']:6.1f} req/s  "
                 f"TTFT p50 {_ms(lv['ttft']['p50_ms'])}  E2E p99 {_ms(lv['e2e']['p99_ms'])}  errors {lv['errors']}")
        levels.append(lv)
    return levels


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def bench_artifact(spec: str, cfg: BenchConfig, prompts_for: Callable, workdir: Path, progress=print) -> dict:
    """`prompts_for(artifact)` -> (set name, prompt items) for this model."""
    from lifecycle.models import resolve
    from perf.bench.limits import weight_bytes
    from perf.bench.memory import RssSampler

    art = resolve(spec, verify=False)
    name = art.name
    kind, prompts = prompts_for(art)
    size = sum(p.stat().st_size for p in art.path.rglob("*") if p.is_file())
    progress(f"{name}: starting `lifecycle serve --engine {cfg.engine}` ({art.format}, {size / 2**20:.1f} MB)")
    server = Server(name, str(art.path), cfg, workdir)
    try:
        with RssSampler(server.proc.pid, match=server.ray_dir) as sampler:
            server.wait_ready(cfg.startup_timeout_s)
            time.sleep(0.5)
            sampler.mark("idle")
            time.sleep(0.5)
            sampler.mark(None)
            progress(f"  ready in {server.load_s:.1f} s, RSS {sampler.steady_bytes('idle') / 2**20:.0f} MB")
            levels = _measure(server.url, name, prompts, cfg, workdir, sampler, progress, server)
            exit_code = server.proc.poll()
    finally:
        server.stop()
    return {"label": name, "kind": "artifact", "prompt_set": kind, "path": str(art.path), "format": art.format,
            "engine": cfg.engine, "size_bytes": size, "weight_bytes": weight_bytes(art.path), "load_s": server.load_s,
            "rss_idle_mb": sampler.steady_bytes("idle") / 2**20, "rss_peak_mb": sampler.peak_bytes / 2**20,
            "rss_steady_mb": max((lv["rss_steady_mb"] for lv in levels), default=0.0),
            "errors": sum(lv["errors"] for lv in levels), "server_exit_code": exit_code, "levels": levels}


def bench_endpoint(cfg: BenchConfig, prompts_for: Callable, workdir: Path, progress=print) -> dict:
    url = cfg.endpoint.rstrip("/")
    check_local(url)
    key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
    status, models = get_json(url + "/v1/models", 10, key)
    if status != 200 and not cfg.served_model:
        raise UserError(f"{url}/v1/models answered {status or 'nothing'}; is the server up? (or pass --served-model)")
    model = cfg.served_model or models["data"][0]["id"]
    progress(f"{url} ({model})")
    kind, prompts = prompts_for(model)
    levels = _measure(url, model, prompts, cfg, workdir, None, progress)
    return {"label": model, "kind": "endpoint", "prompt_set": kind, "url": url,
            "errors": sum(lv["errors"] for lv in levels), "levels": levels}


def run(cfg: BenchConfig, progress=print) -> dict:
    """Benchmark every target; returns the result dict (see DEFINITIONS for every metric)."""
    from perf.bench.limits import achieved_gbs, memory_bandwidth_gbs
    from perf.prompts import choose_kind, prompt_set

    sets: dict[str, list[dict]] = {}

    def prompts_for(target) -> tuple[str, list[dict]]:
        """The prompts file when given, else the built-in set for this model (one per set, shared by models)."""
        kind = "file" if cfg.prompts else choose_kind(cfg.prompt_set, target)
        if kind not in sets:
            sets[kind] = prompt_set(cfg.num_prompts, cfg.input_len, cfg.output_len, cfg.seed, cfg.prompts or None,
                                    kind="arith" if kind == "file" else kind)
        return kind, sets[kind]

    bw = memory_bandwidth_gbs() if cfg.bandwidth else None
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    targets = []
    try:
        if cfg.endpoint:
            targets.append(bench_endpoint(cfg, prompts_for, workdir, progress))
        for spec in cfg.models:
            targets.append(bench_artifact(spec, cfg, prompts_for, workdir, progress))
    except BaseException:
        if any(workdir.glob("server-*.log")):
            progress(f"(server logs kept in {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    if any(t["errors"] or t.get("server_exit_code") is not None for t in targets):
        progress(f"(errors: server logs and request records kept in {workdir})")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    for t in targets:
        for lv in t["levels"]:
            if t.get("weight_bytes"):
                lv["achieved_gbs"] = achieved_gbs(t["weight_bytes"], lv["output_throughput"])
    _attach_accuracy(targets, cfg)
    return {"convention": M.CONVENTION, "definitions": DEFINITIONS,
            "machine": {"cpus": os.cpu_count(), "memory_bandwidth_gbs": bw},
            "settings": asdict(cfg), "targets": targets}


def _attach_accuracy(targets: list[dict], cfg: BenchConfig) -> None:
    arts = [t for t in targets if t["kind"] == "artifact"]
    for t, path in zip(arts, cfg.eval):
        p = Path(path)
        if not p.is_file():
            raise UserError(f"eval file {p} not found; make one with `lifecycle eval --model ... -o {p}`")
        found = json.loads(p.read_text()).get("metrics", {})
        key = cfg.accuracy_metric or next((k for k in found if k.endswith("exact_match")), "")
        if key not in found:
            raise UserError(f"{p} has no metric '{key or '*exact_match'}'; pass --accuracy-metric KEY")
        t["accuracy"], t["accuracy_metric"] = float(found[key]), key
