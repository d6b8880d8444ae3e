"""Ray Serve on one node vs two, and losing a node under load; prints a Markdown table.

    python benchmarks/serve_cluster.py                       # 16 users, 40 s per run
    python benchmarks/serve_cluster.py --users 32 --duration 60

A Ray cluster of nodes bound to 127.0.0.1 (`ray.cluster_utils.Cluster`), each advertising --node-cpus CPUs,
with Ray's default node health checks. `lifecycle serve --set ray_address=...` joins it as a user would,
and Locust (`lifecycle loadtest`'s runner) sends the chat/completion/stream mix:
1. one node, one replica;
2. a second node joins; two replicas, one per node (`max_replicas_per_node=1`);
3. the same, with the worker node killed (SIGKILL of its raylet and workers) a third of the way in and a
   fresh node added two thirds in: requests lost, and seconds until both nodes serve again.
"""

from __future__ import annotations

import argparse
import os
import shutil
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

ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(address: str, replicas: int, work: Path, num_cpus: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(work / f"serve-{replicas}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifecycle.cli", "serve", "--model", "tiny=tiny-arith", "--port", str(port),
         "--set", f"ray_address={address}", "--set", f"min_replicas={replicas}", "--set", f"max_replicas={replicas}",
         "--set", "max_replicas_per_node=1", "--set", f"num_cpus={num_cpus}", "--set", "max_tokens_limit=256"],
        env={**os.environ, **ENV}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server did not start; see {log.name}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()


def replica_nodes(address: str) -> set[str]:
    """Node ids of the model's replicas that answer 20 handle calls."""
    from ray import serve as ray_serve

    from serve.ray_backend import connect

    connect(address)
    handle = ray_serve.get_deployment_handle("model-tiny", app_name="lifecycle")
    return {r.result(timeout_s=60)["node_id"] for r in [handle.info.remote() for _ in range(20)]}


def load(url: str, users: int, seconds: int, out: Path) -> dict:
    from perf.loadtest.run import run_loadtest

    s = run_loadtest(url, users=users, spawn_rate=users, duration=f"{seconds}s", out=out, model="tiny",
                     prompt_set="arith", max_tokens=16)
    return {k: s[k] for k in ("requests", "failures", "rps", "p50_ms", "p99_ms")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--duration", type=int, default=40, help="seconds of each Locust run")
    ap.add_argument("--node-cpus", type=int, default=1, help="CPUs each node advertises")
    ap.add_argument("--runs", default="one,two,kill", help="which of the three runs to make")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "serve-cluster")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.update(ENV)
    tmp = tempfile.mkdtemp(prefix="bc", dir="/tmp")  # Ray's socket paths must stay short
    os.makedirs(f"{tmp}/ray")
    os.environ["RAY_TMPDIR"] = tmp
    from ray.cluster_utils import Cluster

    node = {"num_cpus": args.node_cpus, "object_store_memory": 100 << 20, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "temp_dir": f"{tmp}/ray", "include_dashboard": False})
    replica_cpus = args.node_cpus - 0.2  # room for the router replica on the head
    rows = []
    try:
        runs = args.runs.split(",")
        if "one" in runs:
            proc, url = serve(cluster.address, 1, args.work, replica_cpus)
            try:
                rows.append({"run": "1 node, 1 replica", **load(url, args.users, args.duration, args.work / "one")})
            finally:
                stop(proc)
        worker = cluster.add_node(**node)
        proc, url = serve(cluster.address, 2, args.work, replica_cpus)
        try:
            if "two" in runs:
                rows.append({"run": "2 nodes, 2 replicas", **load(url, args.users, args.duration, args.work / "two")})
            assert len(replica_nodes(cluster.address)) == 2  # also connects this process (main thread only)
            if "kill" in runs:  # Locust in a thread: Ray only adds nodes from the main thread
                result: dict = {}
                t = threading.Thread(target=lambda: result.update(
                    load(url, args.users, args.duration, args.work / "kill")), daemon=True)
                t.start()
                time.sleep(args.duration / 3)
                cluster.remove_node(worker, allow_graceful=False)
                time.sleep(args.duration / 3)
                cluster.add_node(**node)
                added = time.monotonic()
                while len(replica_nodes(cluster.address)) < 2:
                    time.sleep(0.5)
                back = time.monotonic() - added
                t.join(300)
                rows.append({"run": f"2 nodes, worker killed at {args.duration // 3} s, new node at "
                                    f"{2 * args.duration // 3} s (both serving {back:.1f} s after it joined)", **result})
        finally:
            stop(proc)
            # keep Serve's logs (the router's say why a request failed) before the cluster's folder goes
            shutil.copytree(f"{tmp}/ray/session_latest/logs/serve", args.work / "serve-logs", dirs_exist_ok=True)
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{args.users} Locust users, {args.duration} s per run, nodes of {args.node_cpus} CPU on 127.0.0.1")
    print("| run | requests | failed | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        failed = f"{r['failures']} ({100 * r['failures'] / max(r['requests'], 1):.2f}%)"
        print(f"| {r['run']} | {r['requests']} | {failed} | {r['rps']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |")


if __name__ == "__main__":
    main()
