"""The server under load and faults, on both backends and two engines; prints a Markdown table.

    python benchmarks/serve_faults.py                              # local + ray, hf + gguf, 32 users, 60 s
    python benchmarks/serve_faults.py --backends local --engines hf --duration 20

For each backend x engine it starts `lifecycle serve` as a user would (a subprocess on 127.0.0.1), then:
1. Locust (`lifecycle loadtest`'s runner, a subprocess) with `--users` users for `--duration` seconds,
   chat/completion/stream mix, while a probe thread GETs /health every 100 ms and records its latency;
2. on Ray only, a second Locust run of `--kill-duration` seconds during which one of the model's
   `--replicas` replica processes is SIGKILLed a third of the way in (Serve restarts it);
3. SIGTERM, and the process's exit status.
The GGUF engine is the built-in tiny model through `lifecycle quantize` (gguf-q8_0), made once in `--work`.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gguf_artifact(work: Path) -> Path:
    out = work / "tiny-gguf-q8_0"
    if not (out / "manifest.json").is_file():
        from lifecycle.models import resolve
        from quantize.driver import quantize

        quantize(resolve("tiny-arith").path, "gguf-q8_0", out, ["eval_items=0", "parity_prompts=1", "threads=1"])
    return out


def children(pid: int) -> dict[int, str]:
    """Descendants of pid -> command line (psutil)."""
    import psutil

    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found[child.pid] = " ".join(child.cmdline())
        except psutil.Error:  # exited meanwhile
            continue
    return found


class HealthProbe(threading.Thread):
    """GET /health every `every_s` and keep each latency (a failed or non-200 probe counts as an error)."""

    def __init__(self, url: str, every_s: float = 0.1):
        super().__init__(daemon=True)
        self.url, self.every_s = url, every_s
        self.took: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as c:
            while not self.stop.wait(self.every_s):
                t0 = time.perf_counter()
                try:
                    ok = c.get(self.url + "/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.took.append(time.perf_counter() - t0)
                self.errors += not ok

    def summary(self) -> dict:
        t = sorted(self.took) or [float("nan")]
        q = lambda f: 1000 * t[min(len(t) - 1, int(f * len(t)))]  # noqa: E731
        return {"health_n": len(self.took), "health_p50_ms": q(0.5), "health_p99_ms": q(0.99),
                "health_max_ms": 1000 * t[-1], "health_errors": self.errors}


class Server:
    """`lifecycle serve` in a subprocess, on a free loopback port."""

    def __init__(self, backend: str, model: str, work: Path, replicas: int, sets: list[str] = ()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tempfile.mkdtemp(prefix="sf", dir="/tmp")  # Ray's socket paths must stay short
        cmd = [sys.executable, "-m", "lifecycle.cli", "serve", "--engine", backend, "--model", model,
               "--port", str(self.port), "--set", "max_tokens_limit=256"]
        for kv in sets:
            cmd += ["--set", kv]
        if backend == "ray":
            cmd += ["--set", f"ray_temp_dir={self.tmp}", "--set", "ray_num_cpus=2", "--set", "num_cpus=0.5",
                    "--set", f"min_replicas={replicas}", "--set", f"max_replicas={replicas}"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.log = open(work / f"serve-{backend}-{self.port}.log", "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise RuntimeError(f"server did not start; see {self.log.name}")

    def replicas(self, name: str) -> list[int]:
        return [p for p, c in children(self.proc.pid).items() if c.startswith(f"ray::ServeReplica:lifecycle:model-{name}")]

    def stop(self) -> int | str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "hung"
        finally:
            self.log.close()


def load(srv: Server, name: str, users: int, seconds: int, out: Path, kill_at: float | None = None) -> dict:
    """One Locust run with the /health probe; optionally SIGKILL one replica `kill_at` seconds in."""
    from perf.loadtest.run import run_loadtest

    probe = HealthProbe(srv.url)
    probe.start()
    killed: list[int] = []
    if kill_at is not None:
        def kill() -> None:
            time.sleep(kill_at)
            victims = srv.replicas(name)
            if victims:
                os.kill(victims[0], signal.SIGKILL)
                killed.append(victims[0])
        threading.Thread(target=kill, daemon=True).start()
    try:
        s = run_loadtest(srv.url, users=users, spawn_rate=users, duration=f"{seconds}s", out=out, model=name,
                         prompt_set="arith", max_tokens=16)
    finally:
        probe.stop.set()
        probe.join()
    return {"requests": s["requests"], "failures": s["failures"], "rps": s["rps"], "p50_ms": s["p50_ms"],
            "p99_ms": s["p99_ms"], "killed": len(killed), **probe.summary()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="local,ray")
    ap.add_argument("--engines", default="hf,gguf")
    ap.add_argument("--users", type=int, default=32)
    ap.add_argument("--duration", type=int, default=60, help="seconds of each full-load run")
    ap.add_argument("--kill-duration", type=int, default=30, help="seconds of the Ray run with a replica killed (0: skip)")
    ap.add_argument("--set", action="append", default=[], help="a ServeConfig field for every server: key=value")
    ap.add_argument("--replicas", type=int, default=2, help="Ray replicas per model")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "serve-faults")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    models = {"hf": "tiny=tiny-arith"}
    if "gguf" in args.engines:
        models["gguf"] = f"tiny={gguf_artifact(args.work)}"
    rows = []
    for backend in args.backends.split(","):
        for engine in args.engines.split(","):
            srv = Server(backend, models[engine], args.work, args.replicas, args.set)
            try:
                t0 = time.monotonic()
                srv.wait_ready()
                ready_s = time.monotonic() - t0
                tag = f"{backend}-{engine}"
                r = load(srv, "tiny", args.users, args.duration, args.work / tag)
                rows.append({"backend": backend, "engine": engine, "run": f"{args.users} users, {args.duration} s",
                             "ready_s": ready_s, **r})
                if backend == "ray" and args.kill_duration:
                    r = load(srv, "tiny", args.users, args.kill_duration, args.work / f"{tag}-kill",
                             kill_at=args.kill_duration / 3)
                    rows.append({"backend": backend, "engine": engine, "ready_s": ready_s,
                                 "run": f"{args.users} users, {args.kill_duration} s, 1 of {args.replicas} replicas killed",
                                 **r})
            finally:
                code = srv.stop()
            for row in rows:
                if row["backend"] == backend and row["engine"] == engine:
                    row["sigterm_exit"] = code
            print(rows[-1], flush=True)
    print()
    print("| backend | engine | run | requests | failed | req/s | p50 ms | p99 ms | /health p50 / p99 / max ms | exit on SIGTERM |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        failed = f"{r['failures']} ({100 * r['failures'] / max(r['requests'], 1):.2f}%)"
        print(f"| {r['backend']} | {r['engine']} | {r['run']} | {r['requests']} | {failed} | {r['rps']:.1f} | "
              f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['health_p50_ms']:.0f} / {r['health_p99_ms']:.0f} / "
              f"{r['health_max_ms']:.0f} | {r['sigterm_exit']} |")


if __name__ == "__main__":
    main()
