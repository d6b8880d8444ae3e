"""Readers of a release folder: report.html, the model card, load/list/show/diff, `serve --release`.

    python -m pytest tests/test_release_report.py -q

Every release here is synthetic (release.json per lifecycle/release/__init__.py, small files whose sha256
sits in the stage outputs); no model is trained or loaded.
"""

from __future__ import annotations

import copy
import html
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lifecycle.artifact import sha256_file
from lifecycle.errors import UserError
from lifecycle.release import card, releases, report

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
# name -> (format, runtime, size bytes, parent, parity, eval)
ARTIFACTS = {
    "merged": ("hf", "transformers", 1_000_000, None, {},
               {"addition/exact_match": 0.93, "style/verbose_rate": 0.0, "addition-raw/exact_match": 0.885}),
    "gguf-q4_0": ("gguf-q4_0", "llama-cpp-python", 330_000, "merged",
                  {"top1_agreement": 0.961, "mean_kl": 0.016, "greedy_agreement": 0.938},
                  {"addition/exact_match": 0.81, "style/verbose_rate": 0.01, "addition-raw/exact_match": 0.89}),
    "int8": ("int8", "torchao", 680_000, "merged",
             {"top1_agreement": 0.994, "mean_kl": 7.4e-5, "greedy_agreement": 1.0},
             {"addition/exact_match": 0.935, "style/verbose_rate": 0.0, "addition-raw/exact_match": 0.885}),
}
CONFIG = {"base": "tiny-arith", "sft": {"method": "lora", "max_steps": 300, "learning_rate": 0.002},
          "align": {"method": "dpo", "beta": 0.1, "max_steps": 150}, "quantize": {"formats": ["gguf-q4_0", "int8"]},
          "gates": ["addition/exact_match >= 0.9", "addition/exact_match >= 95% of baseline"]}


def _bench(tok: float, ttft: float) -> dict:
    def pct(base):
        return {"mean_ms": base, "p50_ms": base, "p90_ms": base * 1.5, "p95_ms": base * 2, "p99_ms": base * 3}

    levels = [{"concurrency": c, "request_throughput": tok * c ** 0.5 / 8, "output_throughput": tok * c ** 0.5,
               "errors": 0, "ttft": pct(ttft * c), "tpot": pct(1.0), "itl": pct(2.0), "e2e": pct(ttft * c + 20)}
              for c in (1, 4)]
    return {"load_s": 1.2, "size_bytes": 1, "rss_idle_mb": 500.0, "rss_peak_mb": 560.0, "errors": 0, "levels": levels}


def _write(path: Path, data) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else (data if isinstance(data, str) else json.dumps(data)).encode())
    return sha256_file(path)


def _gate(art: str, rule: str, metric: str, value: float, threshold: float) -> dict:
    return {"artifact": art, "rule": rule, "metric": metric, "op": ">=", "kind": "absolute", "value": value,
            "baseline": 0.93, "threshold": threshold, "passed": value >= threshold, "reason": "",
            "by": round(value - threshold, 6)}


def make_release(root: Path, name: str = "r1", *, bench: bool = True, logs: bool = True,
                 evals: dict | None = None, config: dict | None = None, created: str = "2026-01-01T00:00:00+00:00") -> Path:
    """A complete synthetic release; `evals` overrides {artifact: {metric: value}}; gates follow the values."""
    d = root / name
    arts, stages = {}, []
    for art, (fmt_, runtime, size, parent, parity, ev) in ARTIFACTS.items():
        ev = {**ev, **(evals or {}).get(art, {})}
        weights = _write(d / "artifacts" / art / "weights.bin", b"w" * 64)
        msha = _write(d / "artifacts" / art / "manifest.json",
                      {"schema": 1, "name": art, "format": fmt_, "files": {"weights.bin": weights}, "metrics": {}})
        res = _write(d / "results" / f"{art}-eval.json", ev)
        stages.append({"stage": "quantize" if parent else "merge", "target": art if parent else None,
                       "key": f"{art}key".ljust(64, "0"), "cached": art == "int8", "wall_s": 3.5, "inputs": {},
                       "outputs": {f"artifacts/{art}": msha}, "metrics": {}})
        stages.append({"stage": "eval", "target": art, "key": f"ev{art}".ljust(64, "1"), "cached": False,
                       "wall_s": 2.0, "inputs": {art: msha}, "outputs": {f"results/{art}-eval.json": res}, "metrics": ev})
        arts[art] = {"path": f"artifacts/{art}", "format": fmt_, "runtime": runtime, "manifest_sha256": msha,
                     "size_bytes": size, "parent": parent, "parity": parity, "eval": ev,
                     "bench": _bench(900 * 1e6 / size, 5 + size / 1e5) if bench else None}
    training = {}
    if logs:
        sft = [{"step": s, "loss": 3.0 / s, "learning_rate": 0.002} for s in range(1, 11)]
        dpo = [{"step": s, "loss": 1.0 / s, "rewards/margins": 0.5 * s, "rewards/accuracies": 1.0} for s in range(1, 6)]
        for stage, hist in (("sft", sft), ("align", dpo)):
            log = _write(d / "artifacts" / stage / "train_log.json",
                         {"summary": {"train_loss": hist[-1]["loss"]}, "history": hist + [{"step": 99, "train_loss": 0.5}],
                          "wall_s": 1.0})
            training[stage] = f"artifacts/{stage}/train_log.json"
            stages.insert(len(training) - 1, {"stage": stage, "target": None, "key": stage.ljust(64, "2"), "cached": True,
                                              "wall_s": 12.0, "inputs": {}, "outputs": {training[stage]: log},
                                              "metrics": {"train_loss": hist[-1]["loss"]}})
    base = arts["merged"]["eval"]["addition/exact_match"]
    gates = []
    for art in arts:
        value = arts[art]["eval"]["addition/exact_match"]
        gates.append(_gate(art, "addition/exact_match >= 0.9", "addition/exact_match", value, 0.9))
        if art != "merged":
            gates.append(_gate(art, "addition/exact_match >= 95% of baseline", "addition/exact_match", value,
                               round(0.95 * base, 6)))
    failed = [f"{g['artifact']}: {g['rule']}: {g['value']} vs {g['threshold']} (by {g['by']})"
              for g in gates if not g["passed"]]
    rel = {"schema": releases.SCHEMA, "release": name, "created_at": created, "code_version": "0.1.0", "wall_s": 42.0,
           "config": config or CONFIG, "verdict": "refused" if failed else "shipped", "artifact": "artifacts/merged",
           "stages": stages, "artifacts": arts, "training": training, "gates": gates, "failed": failed,
           "deploy": None, "base": {"spec": "tiny-arith", "eval": {"addition/exact_match": 0.0}}}
    _write(d / "release.json", json.dumps(rel, indent=2))
    return d


PASSING = {"gguf-q4_0": {"addition/exact_match": 0.92}}


# ---- report ----------------------------------------------------------------------------------------------
def test_report_is_self_contained_and_names_everything(tmp_path):
    rel_dir = make_release(tmp_path)  # gguf-q4_0 at 0.81 fails both gates
    rel = releases.load_release(rel_dir)
    assert rel["verdict"] == "refused" and len(rel["failed"]) == 2
    path = report.write_report(rel_dir)
    page = path.read_text()
    assert path == rel_dir / "report.html" and path.stat().st_mode & 0o777 == 0o644
    assert re.search(r'class="verdict refused">REFUSED<', page)
    for name in ARTIFACTS:
        assert f">{name}<" in page
    for line in rel["failed"]:
        assert f"<li>{html.escape(line)}</li>" in page
    assert page.count(">FAIL") == 2 and page.count(">pass<") == len(rel["gates"]) - 2
    # nothing fetched from anywhere: no external src/href, no <script>, no <link>
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page, re.IGNORECASE)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert page.count('src="data:image/png;base64,') == 3  # training, tradeoff, latency
    assert "bench c=4" in page and "x smaller than merged" in page
    assert "3 of 8 cached" in page  # sft, align and int8's quantize stage


def test_report_escapes_text(tmp_path):
    rel_dir = make_release(tmp_path, config={**CONFIG, "base": "<img src=x onerror=alert(1)>"})
    page = report.write_report(rel_dir).read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_report_without_bench_logs_or_deploy_still_renders(tmp_path):
    rel_dir = make_release(tmp_path, bench=False, logs=False, evals=PASSING)
    rel = json.loads((rel_dir / "release.json").read_text())
    rel.pop("training")
    page = report.render_html(rel_dir, rel)
    assert 'class="verdict shipped">SHIPPED<' in page
    assert "No bench results" in page and "Not deployed" in page
    assert page.count("data:image/png") == 1  # only size vs accuracy: no logs, no bench
    assert "Training loss" in page and "no data in this release" in page


def test_minimal_release_and_a_deploy_section_render(tmp_path):
    d = tmp_path / "bare"
    d.mkdir()
    bare = {"schema": releases.SCHEMA, "verdict": "refused", "artifact": "artifacts/merged", "stages": [],
            "artifacts": {"merged": {"format": "hf", "eval": {}, "bench": {}}}, "deploy": None}
    (d / "release.json").write_text(json.dumps(bare))
    page = report.write_report(d).read_text()
    assert "REFUSED" in page and "no failed gate line" in page and "No gates" in page and "No eval results" in page
    text = card.write_card(d).read_text()
    assert "No evaluation results" in text and "Not stated" in text
    assert "bare" in releases.show(d)
    deployed = {**bare, "verdict": "shipped", "deploy": {"engine": "local", "url": "http://127.0.0.1:8000",
                                                         "smoke": {"ok": True}, "loadtest": {"p95_ms": 41.5}}}
    page = report.render_html(d, deployed)
    assert "loadtest.p95_ms" in page and "41.5" in page and "SHIPPED" in page


def test_odd_data_and_a_failing_plot_do_not_stop_the_report(tmp_path, monkeypatch):
    rel = releases.load_release(make_release(tmp_path))
    rel["artifacts"]["int8"]["bench"]["levels"][0]["ttft"] = "garbled"
    assert report.render_html(tmp_path / "r1", rel).count("data:image/png") == 3

    def broken(release_dir, rel):
        raise ValueError("no good")

    monkeypatch.setitem(report.PLOTS, "latency", broken)
    page = report.render_html(tmp_path / "r1", rel)
    assert "the plot failed (ValueError: no good)" in page and page.count("data:image/png") == 2


def test_plot_pngs_writes_png_files(tmp_path):
    rel_dir = make_release(tmp_path)
    paths = report.plot_pngs(rel_dir, tmp_path / "img")
    assert sorted(p.name for p in paths) == ["r1-latency.png", "r1-tradeoff.png", "r1-training.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def test_training_plot_finds_the_dpo_margin_key(tmp_path):
    rel_dir = make_release(tmp_path)
    logs = report.train_logs(rel_dir, releases.load_release(rel_dir))
    assert report._margin_key(logs["align"]["history"]) == "rewards/margins"
    assert report._margin_key(logs["sft"]["history"]) is None
    steps, loss = report._series(logs["sft"]["history"], "loss")
    assert steps == list(range(1, 11)) and loss[0] == 3.0  # the summary entry (no 'loss') is skipped


# ---- card ------------------------------------------------------------------------------------------------
def test_card_front_matter_and_results(tmp_path):
    rel_dir = make_release(tmp_path)
    text = card.write_card(rel_dir).read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["license"] == "other" and meta["base_model"] == "tiny-arith"
    assert "gguf" in meta["tags"] and "int8" in meta["tags"]
    assert {m["metrics"][0]["name"] for m in meta["model-index"][0]["results"]} == set(ARTIFACTS["merged"][5])
    assert "| metric | base | merged | gguf-q4_0 | int8 |" in text  # the base's own eval comes first
    assert "| addition/exact_match | 0 | 0.93 | 0.81 | 0.935 |" in text
    assert "| gguf-q4_0 | gguf-q4_0 | llama-cpp-python | 0.31 | 3.03x | merged | 0.961 |" in text
    assert "**FAIL**" in text and "refuses this release" in text
    assert json.loads((rel_dir / "release.json").read_text())["artifacts"]["int8"]["manifest_sha256"] in text
    assert "toy" in text  # honest default limits for the built-in arithmetic model
    assert "method=dpo, beta=0.1, max_steps=150" in text


def test_card_takes_use_and_license_from_config(tmp_path):
    cfg = {**CONFIG, "base": "my/model", "card": {"intended_use": "Sums only.", "limitations": "Tiny.",
                                                  "license": "mit"}}
    rel_dir = make_release(tmp_path, config=cfg, bench=False, logs=False, evals=PASSING)
    text = card.write_card(rel_dir).read_text()
    assert yaml.safe_load(text.split("---\n")[1])["license"] == "mit"
    assert "Sums only." in text and "Tiny." in text and "toy" not in text
    assert "lifecycle serve --release" in text and "refuses" not in text



def test_card_names_a_pretrain_corpus(tmp_path):
    cfg = {**CONFIG, "pretrain": {"data": "/data/notes/subtraction.jsonl", "max_steps": 100}}
    text = card.write_card(make_release(tmp_path, config=cfg)).read_text()
    assert "then on the corpus `subtraction.jsonl`" in text and "pretrained only on synthetic" not in text

# ---- load / list / show / diff ---------------------------------------------------------------------------
def test_load_release_refuses_tampered_output(tmp_path):
    rel_dir = make_release(tmp_path)
    releases.load_release(rel_dir)
    (rel_dir / "results" / "int8-eval.json").write_text('{"addition/exact_match": 1.0}')
    with pytest.raises(UserError, match=r"results/int8-eval\.json.*sha256 mismatch"):
        releases.load_release(rel_dir)
    releases.load_release(rel_dir, verify=False)  # reading without checking still works


def test_load_release_refuses_a_changed_artifact_manifest(tmp_path):
    rel_dir = make_release(tmp_path)
    (rel_dir / "artifacts" / "merged" / "manifest.json").write_text("{}")
    with pytest.raises(UserError, match="artifacts/merged"):
        releases.load_release(rel_dir)


def test_load_release_refuses_non_release_and_wrong_schema(tmp_path):
    with pytest.raises(UserError, match="no release.json"):
        releases.load_release(tmp_path)
    rel_dir = make_release(tmp_path)
    data = json.loads((rel_dir / "release.json").read_text())
    (rel_dir / "release.json").write_text(json.dumps({**data, "schema": "lifecycle.release/0"}))
    with pytest.raises(UserError, match="lifecycle.release/0"):
        releases.load_release(rel_dir)


def test_list_finds_releases(tmp_path):
    make_release(tmp_path, "r2", created="2026-02-01T00:00:00+00:00", evals=PASSING)
    make_release(tmp_path, "r1")
    (tmp_path / "not-a-release").mkdir()
    rows = releases.list_releases(tmp_path)
    assert [(r["name"], r["verdict"]) for r in rows] == [("r1", "refused"), ("r2", "shipped")]
    assert rows[0]["artifacts"] == list(ARTIFACTS) and rows[0]["metric"] == "addition/exact_match"
    assert rows[0]["value"] == 0.93
    with pytest.raises(UserError):
        releases.list_releases(tmp_path / "nowhere")


def test_show_names_verdict_and_failed_gates(tmp_path):
    text = releases.show(make_release(tmp_path))
    assert "refused" in text and "gguf-q4_0: addition/exact_match >= 0.9" in text
    assert "FAIL" in text and "quantize" in text


def test_diff_metric_config_and_gate_flip(tmp_path):
    a = make_release(tmp_path, "r1")
    cfg = copy.deepcopy(CONFIG)
    cfg["sft"]["max_steps"] = 100
    b = make_release(tmp_path, "r2", config=cfg, evals=PASSING)
    d = releases.diff_data(a, b)
    assert d["verdict"] == {"old": "refused", "new": "shipped", "changed": True}
    assert d["config"] == {"sft.max_steps": {"old": 300, "new": 100}}
    m = d["eval"]["gguf-q4_0"]["addition/exact_match"]
    assert (m["old"], m["new"]) == (0.81, 0.92) and m["delta"] == pytest.approx(0.11)
    assert d["eval"]["int8"]["addition/exact_match"]["delta"] == 0
    flipped = {(g["artifact"], g["rule"]): (g["old"], g["new"]) for g in d["gates"]}
    assert flipped == {("gguf-q4_0", "addition/exact_match >= 0.9"): (False, True),
                       ("gguf-q4_0", "addition/exact_match >= 95% of baseline"): (False, True)}
    assert set(d["bench"]["int8"]) == {"1", "4"} and d["bench"]["int8"]["1"]["tok/s"]["delta"] == 0
    text = releases.diff(a, b)
    assert "sft.max_steps" in text and "+0.11" in text and "FAIL -> pass" in text and "refused -> shipped" in text


def test_diff_artifacts_added_and_removed(tmp_path):
    a = make_release(tmp_path, "r1")
    b = make_release(tmp_path, "r2")
    data = json.loads((b / "release.json").read_text())
    data["artifacts"]["gguf-q8_0"] = data["artifacts"].pop("int8")
    (b / "release.json").write_text(json.dumps(data))
    d = releases.diff_data(a, b)
    assert d["artifacts"]["added"] == ["gguf-q8_0"] and d["artifacts"]["removed"] == ["int8"]
    assert "int8" not in d["eval"]


def _app():
    import typer

    app = typer.Typer()

    @app.callback()
    def main() -> None:
        pass

    releases.register(app)
    return app


def test_cli_diff_json_list_and_errors(tmp_path):
    a = make_release(tmp_path, "r1")
    b = make_release(tmp_path, "r2", evals=PASSING)
    runner = CliRunner()
    r = runner.invoke(_app(), ["releases", "diff", str(a), str(b), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["verdict"]["changed"] and data["eval"]["gguf-q4_0"]["addition/exact_match"]["new"] == 0.92
    r = runner.invoke(_app(), ["releases", "list", str(tmp_path)])
    assert r.exit_code == 0 and "r1" in r.output and "r2" in r.output and "refused" in r.output
    r = runner.invoke(_app(), ["releases", "show", str(a)])
    assert r.exit_code == 0 and "gguf-q4_0" in r.output
    (a / "results" / "merged-eval.json").write_text("{}")
    r = runner.invoke(_app(), ["releases", "show", str(a)])
    assert isinstance(r.exception, UserError) and "merged-eval.json" in str(r.exception)


# ---- serve --release, through the real CLI ---------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lifecycle.cli", *args], check=False, capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_serve_release_refuses_a_refused_release(tmp_path):
    r = _cli("serve", "--release", str(make_release(tmp_path)), "--engine", "local")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "refused" in lines[0] and "gguf-q4_0" in lines[0]


def test_serve_release_serves_the_artifact_under_the_release_name(tmp_path):
    rel_dir = make_release(tmp_path, evals=PASSING)
    out = tmp_path / "serve.yaml"
    r = _cli("serve", "--release", str(rel_dir), "--write-config", str(out))
    assert r.returncode == 0, r.stderr
    models = yaml.safe_load(out.read_text())["applications"][0]["args"]["models"]
    assert models == [{"name": "r1", "path": str((rel_dir / "artifacts" / "merged").resolve())}]
    r = _cli("serve", "--release", str(rel_dir), "--model", "mock")
    assert r.returncode == 2 and "not both" in r.stderr
    (rel_dir / "artifacts" / "merged" / "weights.bin").write_bytes(b"changed")
    r = _cli("serve", "--release", str(rel_dir), "--write-config", str(out))
    assert r.returncode == 2 and "weights.bin" in r.stderr
