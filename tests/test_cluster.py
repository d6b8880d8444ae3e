"""Two Ray nodes on this box, bound to 127.0.0.1 (`ray.cluster_utils.Cluster`, started once for the module):

- `lifecycle serve --release R --set ray_address=...` joins the cluster and puts the model's two replicas on different
  nodes; with the worker node killed under load, requests keep succeeding, and when a node returns the
  replica goes back onto it;
- `lifecycle batch --ray-address ...` runs its engine actors on both nodes and writes, byte for byte, what
  the local path writes (greedy), resuming after a torn line.

    python -m pytest tests/test_cluster.py -q
"""

from __future__ import annotations

import json
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
import pytest

pytestmark = pytest.mark.integration

ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
NODE = {"num_cpus": 2, "object_store_memory": 80 << 20, "node_ip_address": "127.0.0.1"}
# a dead node is noticed after about 3 x 0.5 s instead of Ray's default 5 x 3 s
FAST_DEATH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3, "health_check_timeout_ms": 500}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths have a length limit
    os.makedirs(f"{tmp}/ray")
    saved = {k: os.environ.get(k) for k in (*ENV, "RAY_TMPDIR")}
    os.environ.update(ENV, RAY_TMPDIR=tmp)  # Cluster records its address under $RAY_TMPDIR/ray
    c = Cluster(initialize_head=True, head_node_args={**NODE, "temp_dir": f"{tmp}/ray", "include_dashboard": False,
                                                      "_system_config": FAST_DEATH})
    c.add_node(**NODE)
    c.wait_for_nodes()
    c.tmp = tmp
    try:
        yield c
    finally:
        import ray

        ray.shutdown()
        c.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _env() -> dict:
    return {**os.environ, **ENV}  # RAY_TMPDIR included: a driver started in it finds nothing of other clusters


@pytest.fixture(scope="module")
def release(tmp_path_factory, base_artifact) -> Path:
    """A shipped release folder, as `lifecycle ship` writes it, around the built-in model."""
    from lifecycle.artifact import sha256_file

    rel = tmp_path_factory.mktemp("rel") / "r1"
    shutil.copytree(base_artifact.path, rel / "artifacts" / "merged")
    digest = sha256_file(rel / "artifacts" / "merged" / "manifest.json")
    (rel / "release.json").write_text(json.dumps({
        "schema": "lifecycle.release/1", "release": "r1", "verdict": "shipped", "artifact": "artifacts/merged",
        "config": {}, "stages": [], "gates": [], "failed": [],
        "artifacts": {"merged": {"path": "artifacts/merged", "format": "hf", "manifest_sha256": digest}}}))
    return rel


@pytest.fixture(scope="module")
def server(cluster, release):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(Path(cluster.tmp) / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifecycle.cli", "serve", "--release", str(release), "--port", str(port),
         "--set", f"ray_address={cluster.address}", "--set", "min_replicas=2", "--set", "max_replicas=2",
         "--set", "max_replicas_per_node=1", "--set", "num_cpus=0.5", "--set", "startup_timeout_s=120"],
        env=_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 150
    try:
        while True:
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _replica_nodes(cluster, within_s: float = 30) -> dict[int, str]:
    """pid -> node id of the model's replicas that answer handle calls, gathered until two nodes answered
    or `within_s` passed (a new handle learns the replica set a moment after it is made)."""
    from ray import serve

    from serve.ray_backend import connect

    connect(cluster.address)  # once per module; the fixture disconnects
    handle = serve.get_deployment_handle("model-r1", app_name="lifecycle")
    seen: dict[int, str] = {}
    deadline = time.monotonic() + within_s
    while len(set(seen.values())) < 2 and time.monotonic() < deadline:
        for r in [handle.info.remote() for _ in range(20)]:
            info = r.result(timeout_s=60)
            seen[info["pid"]] = info["node_id"]
        time.sleep(0.5)
    return seen


def _chat(url: str) -> str:
    r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
        "model": "r1", "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "What is 12+30?"}]})
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


def test_serve_joins_a_loopback_cluster_and_spreads_replicas(cluster, server):
    assert _chat(server)
    nodes = _replica_nodes(cluster)
    assert len(nodes) == 2 and len(set(nodes.values())) == 2, nodes  # two replicas, one per node
    assert set(nodes.values()) == {n["NodeID"] for n in __import__("ray").nodes() if n["Alive"]}


LINES = [{"id": i, "prompt": f"{i}+{i + 1}=", "max_tokens": 6} for i in range(20)]
LINES[5] = "not json"
LINES[11] = {"id": "neg", "prompt": "x", "temperature": -1}


def test_batch_spreads_actors_and_matches_local_bytes(cluster, tmp_path):
    from serve.batch import run_batch

    src = tmp_path / "in.jsonl"
    src.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in LINES))
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    run_batch("tiny-arith", src, local, max_tokens=12, batch_size=2)

    # a run killed while writing line 7: the cluster run resumes it, so its lines 7.. come from Ray
    lines = local.read_text().splitlines(keepends=True)
    on_ray.write_text("".join(lines[:7]) + lines[7][:9])
    r = subprocess.run([sys.executable, "-m", "lifecycle.cli", "batch", "--model", "tiny-arith", "--input",
                        str(src), "--output", str(on_ray), "--max-tokens", "12", "--batch-size", "2",
                        "--ray-address", cluster.address, "--actors", "2", "--num-cpus", "0.25"],
                       env=_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary == {"lines": 20, "resumed_after": 7, "processed": 13, "failed": 1, "nodes": 2}, summary
    assert on_ray.read_bytes() == local.read_bytes()


def test_batch_actors_that_do_not_fit_are_one_clear_error(cluster, tmp_path, monkeypatch):
    import serve.batch
    from lifecycle.errors import UserError
    from serve.ray_backend import connect

    connect(cluster.address)
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "1+1="}\n')
    monkeypatch.setattr(serve.batch, "ACTOR_START_S", 3)
    with pytest.raises(UserError, match="could not start 2 engine actors of 3.0 CPUs"):
        serve.batch.run_batch("mock", src, tmp_path / "out.jsonl", ray_address=cluster.address, actors=2, num_cpus=3.0,
                              use_ray=True)


def test_losing_the_worker_node_under_load(cluster, server):
    """Clients keep sending while the worker node dies: Serve's retry sends a dead replica's requests to the
    live one; when a node joins again, the second replica is placed on it."""
    results: list[bool] = []
    errors: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                _chat(server)
                results.append(True)
            except httpx.HTTPError as e:
                results.append(False)
                errors.append(e.response.text[:300] if isinstance(e, httpx.HTTPStatusError) else repr(e))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(3)
    [worker] = cluster.worker_nodes
    cluster.remove_node(worker, allow_graceful=False)
    time.sleep(8)
    during = len(results)
    cluster.add_node(**NODE)
    deadline = time.monotonic() + 90
    while len(set((nodes := _replica_nodes(cluster, within_s=5)).values())) < 2:
        assert time.monotonic() < deadline, f"the replica did not return to a node: {nodes}"
    stop.set()
    for t in threads:
        t.join(60)
    failed = results.count(False)
    print(f"worker node lost under load: {failed} of {len(results)} requests failed", errors)
    assert during > 10 and failed <= max(1, len(results) // 100), f"{failed} of {len(results)} failed"
