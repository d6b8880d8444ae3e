"""`lifecycle ship`: gates, the stage cache (hits, exact invalidation, kill and resume), hashes, diff, and the
built-in default end to end. Ship runs go through the real CLI in a subprocess.

    python -m pytest tests/test_ship.py -q
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lifecycle.artifact import Artifact, sha256_file
from lifecycle.release.pipeline import decide

QUICK = """\
threads: 1
data: {n_sft: 200, n_pref: 100}
sft: {max_steps: 20, batch_size: 8, eval_items: 20}
align: {method: dpo, max_steps: 8, batch_size: 8, eval_items: 20}
merge: {eval_items: 20}
formats: {gguf-q8_0: {eval_items: 20, parity_prompts: 8}, int8: {eval_items: 20, parity_prompts: 8}}
eval: {limit: 20}
bench: {concurrency: [1], num_prompts: 4, warmup: 1}
gates:
  all: ["addition/exact_match >= 0.0", "bench/errors <= 0"]
  quantized: ["parity/top1_agreement >= 0.9"]
"""


def _env(cache: Path) -> dict:
    return {**os.environ, "LIFECYCLE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "LIFECYCLE_HOME": str(cache)}


def _ship(cwd: Path, home: Path, *args, timeout=1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lifecycle.cli", "ship", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(home), cwd=cwd)


def _release(path: Path) -> dict:
    return json.loads((path / "release.json").read_text())


def _ran(release: dict) -> set[tuple]:
    return {(s["stage"], s["target"]) for s in release["stages"] if not s["cached"]}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """One quick release r1 with its own stage cache; later tests ship again into the same cache."""
    root = tmp_path_factory.mktemp("ship")
    (root / "quick.yaml").write_text(QUICK)
    out = _ship(root, root / "home", "--config", "quick.yaml", "-o", "r1")
    assert out.returncode == 0, out.stdout + out.stderr
    return root


@pytest.mark.unit
def test_decide_is_pure_and_scoped():
    gates = {"all": ["addition/exact_match >= 0.9", "bench/errors <= 0"],
             "quantized": ["addition/exact_match >= 97% of baseline"]}
    metrics = {"merged": {"addition/exact_match": 0.95},
               "gguf-q4_0": {"addition/exact_match": 0.91}}
    rows, failed = decide(gates, metrics, disabled={"bench"})
    assert [(r["artifact"], r["passed"]) for r in rows] == [
        ("merged", True), ("merged", None), ("gguf-q4_0", True), ("gguf-q4_0", None), ("gguf-q4_0", False)]
    assert rows[-1]["threshold"] == pytest.approx(0.95 * 0.97) and rows[-1]["by"] == pytest.approx(0.91 - 0.9215)
    assert failed == ["gguf-q4_0: addition/exact_match >= 97% of baseline: 0.91 vs 0.9215 (by -0.0115)"]
    rows2, failed2 = decide(gates, metrics)  # with bench on, a missing bench metric fails
    assert "metric missing" in failed2[0] and decide(gates, metrics) == (rows2, failed2)


@pytest.mark.slow
def test_first_ship_runs_every_stage_and_records_hashes(quick):
    rel = _release(quick / "r1")
    assert rel["verdict"] == "shipped" and rel["schema"] == "lifecycle.release/1"
    assert [s["stage"] for s in rel["stages"]] == [
        "data-sft", "data-pref", "sft", "align", "merge", "quantize", "quantize",
        "eval", "eval", "eval", "eval", "bench", "bench", "bench"]
    assert not any(s["cached"] for s in rel["stages"])
    assert list(rel["artifacts"]) == ["merged", "gguf-q8_0", "int8"]
    for stage in rel["stages"]:  # every output hash in release.json matches the file in the release
        for rel_path, digest in stage["outputs"].items():
            assert sha256_file(quick / "r1" / rel_path) == digest, rel_path
    for name in ("sft", "align", "merged", "gguf-q8_0", "int8"):
        art = Artifact.load(quick / "r1" / "artifacts" / name)  # verifies every file's sha256
        assert art.name == name
    assert rel["artifacts"]["gguf-q8_0"]["parity"]["top1_agreement"] >= 0.9
    assert rel["artifacts"]["int8"]["bench"]["levels"][0]["errors"] == 0
    assert (quick / "r1" / "README.md").is_file() and (quick / "r1" / "report.html").is_file()
    assert [p.name for p in quick.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_rerun_with_nothing_changed_hits_the_cache_for_every_stage(quick):
    out = _ship(quick, quick / "home", "--config", "quick.yaml", "-o", "r2")
    assert out.returncode == 0, out.stdout + out.stderr
    r1, r2 = _release(quick / "r1"), _release(quick / "r2")
    assert _ran(r2) == set() and all(s["cached"] for s in r2["stages"])
    assert [s["key"] for s in r1["stages"]] == [s["key"] for s in r2["stages"]]
    assert r1["artifacts"]["merged"]["eval"] == r2["artifacts"]["merged"]["eval"]
    assert "14/14 stages from the cache" in out.stdout


@pytest.mark.slow
def test_quant_option_change_reruns_only_that_format(quick):
    out = _ship(quick, quick / "home", "--config", "quick.yaml", "-o", "r3",
                "--set", "formats.int8={eval_items: 20, parity_prompts: 4}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _ran(_release(quick / "r3")) == {("quantize", "int8"), ("eval", "int8"), ("bench", "int8")}


@pytest.mark.slow
def test_list_option_reaches_the_format_as_a_list(quick):
    """A list option in a ship config arrives typed (it used to arrive as ["['lm_head'", "'x']"])."""
    out = _ship(quick, quick / "home", "--config", "quick.yaml", "-o", "r-list", "--set", "bench.enabled=false",
                "--set", "formats.int8={eval_items: 20, parity_prompts: 4, skip_modules: [lm_head, embed_tokens]}")
    assert out.returncode == 0, out.stdout + out.stderr
    options = Artifact.load(quick / "r-list" / "artifacts" / "int8").created_by["options"]
    assert options["skip_modules"] == ["lm_head", "embed_tokens"]


@pytest.mark.slow
def test_editing_a_module_sft_imports_reruns_sft_and_everything_after(quick, tmp_path):
    """The code part of a key follows the import graph: lifecycle/eval/arith.py is imported by sft (its
    held-out check) but not by data prepare. A copy of the source with that file edited reruns sft and every
    stage downstream of it, and reuses the data stages; the unedited copy reuses everything."""
    import shutil

    src = tmp_path / "src"
    root = Path(__file__).resolve().parents[1]
    for pkg in ("lifecycle", "quantize", "serve", "perf", "deploy"):
        shutil.copytree(root / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))

    def ship(name):
        env = {**_env(quick / "home"), "PYTHONPATH": str(src)}
        return subprocess.run([sys.executable, "-m", "lifecycle.cli", "ship", "--config", "quick.yaml", "-o", name,
                               "--set", "bench.enabled=false"], capture_output=True, text=True, timeout=1800,
                              env=env, cwd=quick)

    out = ship("r-copy")
    assert out.returncode == 0, out.stdout + out.stderr
    assert _ran(_release(quick / "r-copy")) == set()  # same source, other folder: every key is the same
    with open(src / "lifecycle" / "eval" / "arith.py", "a") as f:
        f.write("\n# an edit that changes no behaviour still changes the code identity\n")
    out = ship("r-edit")
    assert out.returncode == 0, out.stdout + out.stderr
    ran = _ran(_release(quick / "r-edit"))
    assert {"sft", "align", "merge", "quantize", "eval"} <= {stage for stage, _ in ran}
    assert ("data-sft", None) not in ran and ("data-pref", None) not in ran


@pytest.mark.slow
def test_gate_change_only_redecides_and_refuses(quick):
    out = _ship(quick, quick / "home", "--config", "quick.yaml", "-o", "r4",
                "--set", "gates.all=[addition/exact_match >= 1.01]")
    assert out.returncode == 1, out.stdout + out.stderr
    rel = _release(quick / "r4")
    assert rel["verdict"] == "refused" and _ran(rel) == set()
    assert len(rel["failed"]) == 3 and rel["failed"][0].startswith("merged: addition/exact_match >= 1.01: ")
    assert all(r["by"] < 0 for r in rel["gates"] if r["rule"].startswith("addition"))
    assert "gate failed" in out.stdout and "verdict: refused" in out.stdout

    from lifecycle.release.releases import diff_data

    diff = json.dumps(diff_data(quick / "r1", quick / "r4"))
    assert "refused" in diff and "1.01" in diff


@pytest.mark.slow
def test_deploy_stage_serves_smoke_tests_and_load_tests(quick):
    """deploy.enabled: the served artifact answers through the OpenAI API and holds the Locust SLOs."""
    out = _ship(quick, quick / "home", "--config", "quick.yaml", "-o", "r6", "--set", "deploy.enabled=true",
                "--set", "deploy.duration=4s", "--set", "deploy.users=2", "--set", "serve=gguf-q8_0")
    assert out.returncode == 0, out.stdout + out.stderr
    rel = _release(quick / "r6")
    assert _ran(rel) == {("deploy", "gguf-q8_0")} and rel["artifact"] == "artifacts/gguf-q8_0"
    dep = rel["deploy"]
    assert dep["smoke"]["ok"] and dep["smoke"]["status"] == 200 and dep["smoke"]["reply"]
    assert dep["loadtest"]["requests"] > 0 and dep["loadtest"]["failures"] == 0
    slo_rows = [g for g in rel["gates"] if g["artifact"] == "deploy"]
    assert slo_rows and all(g["passed"] for g in slo_rows)
    out = _ship(quick, quick / "home", "--config", "quick.yaml", "-o", "r7", "--set", "deploy.enabled=true",
                "--set", "deploy.duration=3s", "--set", "deploy.slo=p95_ms=0.001")
    assert out.returncode == 1 and "deploy: loadtest p95_ms <= 0.001" in out.stdout


@pytest.mark.parametrize("method", ["kto", "grpo"])
@pytest.mark.slow
def test_other_align_methods_ship_reusing_data_and_sft(quick, method):
    """Unpaired (KTO) and online (GRPO) alignment run inside ship; data and SFT come from the cache."""
    out = _ship(quick, quick / "home", "--config", "quick.yaml", "-o", f"r-{method}", "--set", f"align.method={method}",
                "--set", "bench.enabled=false")
    assert out.returncode == 0, out.stdout + out.stderr
    rel = _release(quick / f"r-{method}")
    [align] = [s for s in rel["stages"] if s["stage"] == "align"]
    assert not align["cached"] and ("sft", None) not in _ran(rel) and ("data-sft", None) not in _ran(rel)
    manifest = Artifact.load(quick / f"r-{method}" / "artifacts" / "align").manifest
    assert manifest["created_by"]["options"]["method"] == method


@pytest.mark.slow
def test_deploy_stage_on_ray_serve(quick):
    """deploy.engine=ray: the release's artifact on Ray Serve answers the smoke test and the Locust profile."""
    out = _ship(quick, quick / "home", "--config", "quick.yaml", "-o", "r-ray", "--set", "deploy.enabled=true",
                "--set", "deploy.engine=ray", "--set", "deploy.duration=4s", "--set", "deploy.users=2")
    assert out.returncode == 0, out.stdout + out.stderr
    dep = _release(quick / "r-ray")["deploy"]
    assert dep["engine"] == "ray" and dep["smoke"]["status"] == 200
    assert dep["loadtest"]["requests"] > 0 and dep["loadtest"]["failures"] == 0


@pytest.mark.slow
def test_damaged_cache_entry_is_rebuilt_not_used(quick, tmp_path):
    rel = _release(quick / "r1")
    [key] = [s["key"] for s in rel["stages"] if (s["stage"], s["target"]) == ("quantize", "gguf-q8_0")]
    cached_files = list((quick / "home" / "cache" / "ship" / key[:24]).glob("gguf-q8_0/*.gguf"))
    assert len(cached_files) == 1
    cached_files[0].write_bytes(b"not a gguf")  # also damages r1's hard link: load must refuse it
    with pytest.raises(Exception, match="sha256|changed|modified"):
        Artifact.load(quick / "r1" / "artifacts" / "gguf-q8_0")
    out = _ship(quick, quick / "home", "--config", "quick.yaml", "-o", "r5")
    assert out.returncode == 0, out.stdout + out.stderr
    # rebuilt, it has a new manifest hash, so what measured it runs again too
    assert _ran(_release(quick / "r5")) == {("quantize", "gguf-q8_0"), ("eval", "gguf-q8_0"), ("bench", "gguf-q8_0")}
    Artifact.load(quick / "r5" / "artifacts" / "gguf-q8_0")


@pytest.mark.slow
def test_killed_run_resumes_from_the_last_completed_stage(tmp_path):
    (tmp_path / "quick.yaml").write_text(QUICK.replace(", int8: {eval_items: 20, parity_prompts: 8}", "")
                                         .replace("bench: {", "bench: {enabled: false, "))
    home = tmp_path / "home"
    proc = subprocess.Popen([sys.executable, "-m", "lifecycle.cli", "ship", "--config", "quick.yaml", "-o", "rel"],
                            cwd=tmp_path, env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    cache = home / "cache" / "ship"
    deadline = time.monotonic() + 600
    while not list(cache.glob("*/sft/manifest.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "ship finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # mid-align
    proc.wait()
    assert not (tmp_path / "rel").exists()
    complete = [p for p in cache.glob("*/*") if not p.name.startswith(".")]
    assert {p.name for p in complete} == {"data-sft", "data-pref", "sft"}
    for p in complete:
        Artifact.load(p)
    out = _ship(tmp_path, home, "--config", "quick.yaml", "-o", "rel")
    assert out.returncode == 0, out.stdout + out.stderr
    rel = _release(tmp_path / "rel")
    assert {s["stage"] for s in rel["stages"] if s["cached"]} == {"data-sft", "data-pref", "sft"}
    assert not list(cache.glob("*/.*tmp*")) and not list(tmp_path.glob(".rel.tmp-*"))


@pytest.mark.unit
def test_cache_listing_and_prune_spare_recent_entries_and_releases(tmp_path):
    """Pruning goes by last use (a hit touches the entry); files a release links stay on disk."""
    from lifecycle.release.cache import StageCache

    cache = StageCache(tmp_path / "cache")
    old, used, fresh = (StageCache.key(n, config={}, inputs={}, code={}) for n in ("old", "used", "fresh"))
    for k in (old, used, fresh):
        cache.store_json(k, "eval-merged", {"x": "1" * 4096})
    os.link(cache.json_path(fresh, "eval-merged"), tmp_path / "release-copy.json")  # a release's hard link
    month_ago = time.time() - 30 * 86400
    for k in (old, used):
        os.utime(cache.entry(k), (month_ago, month_ago))
    assert cache.load_json(used, "eval-merged") == {"x": "1" * 4096}  # a hit: `used` is recent again
    rows = {r["key"]: r for r in cache.entries()}
    assert rows[old[:24]]["age_days"] >= 29.9 and rows[used[:24]]["age_days"] < 1
    assert rows[fresh[:24]]["bytes_freed"] == 0 and rows[old[:24]]["bytes_freed"] == rows[old[:24]]["bytes"] > 4096
    out = subprocess.run([sys.executable, "-m", "lifecycle.cli", "releases", "cache", "--prune", "--older-than", "7",
                          "--cache-dir", str(cache.root), "--json"], capture_output=True, text=True, env=_env(tmp_path))
    assert out.returncode == 0, out.stderr
    assert [r["key"] for r in json.loads(out.stdout)["entries"]] == [old[:24]]
    assert sorted(r["key"] for r in cache.entries()) == sorted([used[:24], fresh[:24]])
    with cache:  # a running ship holds the lock: prune refuses in one line
        out = subprocess.run([sys.executable, "-m", "lifecycle.cli", "releases", "cache", "--prune",
                              "--older-than", "0", "--cache-dir", str(cache.root)],
                             capture_output=True, text=True, env=_env(tmp_path))
    assert out.returncode == 2 and "another `lifecycle ship` is using" in out.stderr and "Traceback" not in out.stderr
    assert len(cache.entries()) == 2
    with cache:
        cache.prune(0)
    assert cache.entries() == [] and json.loads((tmp_path / "release-copy.json").read_text())["x"]


@pytest.mark.integration
def test_bad_config_is_one_line(tmp_path):
    out = _ship(tmp_path, tmp_path / "home", "--set", "formats=[gguf-q9]")
    assert out.returncode == 2 and "unknown quantization format 'gguf-q9'" in out.stderr
    assert "Traceback" not in out.stderr
    out = _ship(tmp_path, tmp_path / "home", "--set", "gates.onnx=[addition/exact_match >= 0.5]")
    assert out.returncode == 2 and "gate scope(s) onnx" in out.stderr
    out = _ship(tmp_path, tmp_path / "home", "--set", "data.sft=missing.jsonl")
    assert out.returncode == 2 and "data.sft: missing.jsonl is neither" in out.stderr


@pytest.mark.slow
def test_user_data_file_goes_through_data_prepare(quick):
    """A user's JSONL is prepared (dedup counted, nothing lost silently) and keyed by its sha256."""
    from lifecycle.data.load import write_jsonl
    from lifecycle.data.synth import sft_records

    records = sft_records(150, seed=5)
    write_jsonl(quick / "chats.jsonl", records + records[:7])  # 7 exact duplicates
    cfg = QUICK.replace("bench: {", "bench: {enabled: false, ").replace(
        ", int8: {eval_items: 20, parity_prompts: 8}", "")
    (quick / "user.yaml").write_text(cfg)
    out = _ship(quick, quick / "home", "--config", "user.yaml", "-o", "r-user", "--set", "data.sft=chats.jsonl")
    assert out.returncode == 0, out.stdout + out.stderr
    rel = _release(quick / "r-user")
    [data] = [s for s in rel["stages"] if s["stage"] == "data-sft"]
    assert data["inputs"]["sha256"] == sha256_file(quick / "chats.jsonl") and not data["cached"]
    m = data["metrics"]
    assert m["read"] == 157 and m["read"] == m["kept"] + m["dropped"] and m["dropped"] >= 7
    assert m["records_train"] == m["kept"]
    assert ("sft", None) in _ran(rel) and ("data-pref", None) not in _ran(rel)


@pytest.mark.slow
def test_default_ship_end_to_end(tmp_path):
    """The built-in default: SFT teaches the chat format, DPO makes answers concise, every format ships."""
    home = tmp_path / "home"
    out = _ship(tmp_path, home, "-o", "rel")
    assert out.returncode == 0, out.stdout + out.stderr
    rel = _release(tmp_path / "rel")
    m = {s["stage"]: s["metrics"] for s in rel["stages"] if s["target"] is None}
    base = rel["base"]["eval"]
    assert rel["verdict"] == "shipped" and len(rel["artifacts"]) >= 4
    assert m["sft"]["exact_match"] >= base["addition/exact_match"] + 0.5
    assert m["align"]["verbose_rate"] <= m["sft"]["verbose_rate"] - 0.2
    for name, art in rel["artifacts"].items():
        assert art["eval"]["addition/exact_match"] >= 0.9, name
        assert art["bench"]["errors"] == 0
    again = _ship(tmp_path, home, "-o", "rel2")
    assert again.returncode == 0 and all(s["cached"] for s in _release(tmp_path / "rel2")["stages"])
