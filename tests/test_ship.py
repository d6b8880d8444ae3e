"""`lifecycle ship` end to end: a refused release on an impossible gate, and the built-in default."""

import json
import os
import subprocess
import sys

import pytest

from lifecycle.ship import decide


def _ship(tmp_path, *args, timeout=1800):
    env = {**os.environ, "LIFECYCLE_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "lifecycle.cli", "ship", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=tmp_path)


def test_decide_is_a_pure_function_of_metrics():
    rows, verdict = decide({"exact_match": 0.95, "verbose_rate": 0.3}, {"exact_match_min": 0.9, "verbose_rate_max": 0.2})
    assert verdict == "refused"
    assert [r["passed"] for r in rows] == [True, False]
    assert rows[1]["by"] == pytest.approx(0.1)
    assert decide({}, {"exact_match_min": 0.5})[1] == "refused"


def test_refused_release_exits_nonzero(tmp_path):
    cfg = tmp_path / "ship.yaml"
    cfg.write_text("sft: {max_steps: 2, batch_size: 4, n_examples: 16}\n"
                   "dpo: {max_steps: 2, batch_size: 4, n_examples: 16}\n"
                   "eval_items: 10\nthreads: 1\ngates: {exact_match_min: 1.01}\n")
    out = _ship(tmp_path, "--config", str(cfg), "--output", "rel")
    assert out.returncode == 1, out.stderr
    release = json.loads((tmp_path / "rel" / "release.json").read_text())
    assert release["verdict"] == "refused"
    assert [s["stage"] for s in release["stages"]] == ["base", "sft", "dpo", "merge"]
    [gate] = release["gates"]
    assert gate["passed"] is False and gate["by"] < 0
    from lifecycle.artifact import Artifact
    from lifecycle.train.common import adapter_base

    merged = Artifact.load(tmp_path / "rel" / "artifacts" / "merged")
    dpo = Artifact.load(tmp_path / "rel" / "artifacts" / "dpo")
    assert merged.parent["path"] == str(dpo.path)  # lineage points at real folders
    assert adapter_base(dpo).path == (tmp_path / "rel" / "artifacts" / "sft").resolve()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_default_ship_teaches_format_then_style(tmp_path):
    """The built-in default: SFT teaches the chat format, DPO makes answers concise, the merge ships."""
    out = _ship(tmp_path, "--output", "rel")
    assert out.returncode == 0, out.stdout + out.stderr
    release = json.loads((tmp_path / "rel" / "release.json").read_text())
    m = {s["stage"]: s["metrics"] for s in release["stages"]}
    assert release["verdict"] == "shipped"
    assert m["sft"]["exact_match"] >= m["base"]["exact_match"] + 0.5
    assert m["dpo"]["verbose_rate"] <= m["sft"]["verbose_rate"] - 0.2
    assert m["merge"]["exact_match"] >= 0.9
    assert m["merge"]["merge_parity"]["logits_max_abs_diff"] <= 1e-3
    from lifecycle.artifact import Artifact

    Artifact.load(tmp_path / "rel" / "artifacts" / "merged")
