"""Built-in tasks on tiny-arith, task files, the report, and gates that pass the original model and fail
a deliberately degraded copy (weights with noise added)."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.errors import UserError
from lifecycle.eval import classify
from lifecycle.eval.runner import SCHEMA, evaluate, flatten, run_tasks
from lifecycle.eval.tasks import DEFAULT_TASKS, load_task, resolve_tasks

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "eval"
REGRESSION_GATES = str(ROOT / "configs" / "gates-regression.yaml")


def _noisy_copy(base, dest: Path, scale: float):
    """tiny-arith with Gaussian noise (scale x each tensor's std) added to every weight, as an artifact."""
    import torch
    from safetensors.torch import load_file, save_file

    from lifecycle.artifact import Artifact, write_artifact

    with write_artifact(dest, format="hf", stage="test-noise", parent=base, options={"noise": scale}) as tmp:
        for rel in base.files:
            if rel != "model.safetensors":
                shutil.copy(base.path / rel, tmp / rel)
        g = torch.Generator().manual_seed(0)
        sd = {k: v + scale * v.float().std() * torch.randn(v.shape, generator=g) if v.numel() > 1 else v
              for k, v in load_file(base.path / "model.safetensors").items()}
        save_file(sd, tmp / "model.safetensors", metadata={"format": "pt"})
    return Artifact.load(dest)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory, base_artifact, torch_one_thread):
    root = tmp_path_factory.mktemp("noisy")
    return {"heavy": _noisy_copy(base_artifact, root / "heavy", 0.2),
            "mild": _noisy_copy(base_artifact, root / "mild", 0.05)}


@pytest.mark.integration
def test_builtin_tasks_on_tiny_arith(hf_engine):
    results = run_tasks(resolve_tasks(None), hf_engine)
    assert list(results) == DEFAULT_TASKS
    m = flatten(results)
    assert m["addition-raw/exact_match"] >= 0.95           # pretraining teaches raw sums
    assert m["addition/exact_match"] <= 0.2                 # ... but not the chat format (that is SFT's job)
    assert 1.0 < m["arith-ppl/perplexity"] < 4.0
    assert m["tiny-mc/accuracy/addition"] >= 0.9
    assert m["sum-retrieval/recall@1"] >= 0.9 and m["sum-retrieval/recall@5"] == 1.0
    assert 0.0 <= m["ifeval-tiny/prompt_accuracy"] <= m["ifeval-tiny/instruction_accuracy"] <= 1.0
    assert m["redteam/harmful_rate"] == 0.0                 # it only ever talks about sums
    assert results["style"]["against"] == "reference" and m["style/win_rate"] <= 0.5
    assert all(isinstance(v, (int, float)) for v in m.values())


@pytest.mark.integration
def test_classification_task_score_and_generate(hf_engine):
    task = load_task(FIX / "small-sums.yaml")
    r = classify.run(task, hf_engine, None)["metrics"]
    assert r["accuracy"] >= 0.9 and r["f1_macro"] >= 0.9 and r["auc"] >= 0.9 and r["n"] == 24
    task.options["mode"] = "generate"
    g = classify.run(task, hf_engine, None)["metrics"]
    assert g["accuracy"] >= 0.9 and g["auc"] is None


@pytest.mark.unit
def test_label_from_reply():
    verbal = {"pos": "yes", "neg": "no"}
    assert classify.label_from_reply("Yes, it is.", verbal) == "pos"
    assert classify.label_from_reply("I think no", verbal) == "neg"
    assert classify.label_from_reply("maybe", verbal) == classify.NO_LABEL


@pytest.mark.unit
def test_task_file_errors(tmp_path):
    bad_type = tmp_path / "t.yaml"
    bad_type.write_text("type: essay\ndata: d.jsonl\n")
    with pytest.raises(UserError, match="unknown type 'essay'"):
        load_task(bad_type)
    t = tmp_path / "gen.yaml"
    t.write_text("type: generate\ndata: d.jsonl\n")
    with pytest.raises(UserError, match="d.jsonl not found"):
        load_task(t).items()
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "reference": "b"}\nnot json\n')
    with pytest.raises(UserError, match="d.jsonl:2: not valid JSON"):
        load_task(t).items()
    with pytest.raises(UserError, match="unknown task 'nope'"):
        resolve_tasks(["nope"])
    with pytest.raises(UserError, match="given twice"):
        resolve_tasks(["addition,addition"])


@pytest.mark.integration
def test_user_task_without_code(tmp_path, hf_engine):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"p": f"{a}+{a}=", "reference": str(2 * a)}) + "\n"
                                              for a in (11, 23, 31)))
    (tmp_path / "doubles.yaml").write_text(
        "type: generate\ndata: d.jsonl\nprompt_format: raw\ntemplate: '{p}'\nstop: [\"\\n\"]\nmax_tokens: 4\n"
        "metrics: [exact_match, rouge, bleu]\n")
    r = run_tasks(resolve_tasks([str(tmp_path / "doubles.yaml")]), hf_engine)["doubles"]["metrics"]
    assert r["exact_match"] == 1.0 and r["rouge1"] == 1.0
    assert r["bleu"] == 0.0  # corpus BLEU needs 4-grams: one-token answers score 0 even when exact


@pytest.mark.integration
def test_report_shape_and_relative_gates(base_artifact, noisy, tmp_path):
    tasks = ["addition-raw", "arith-ppl", "tiny-mc", "sum-retrieval", "style"]
    gates = tmp_path / "g.yaml"
    gates.write_text("gates:\n  - arith-ppl/perplexity <= 105% of baseline\n"
                     "  - addition-raw/exact_match >= 97% of baseline\n  - tiny-mc/accuracy >= 0.8\n")
    rep = evaluate(model=str(noisy["mild"].path), tasks=tasks, baseline=str(base_artifact.path), gates=gates)
    assert rep["schema"] == SCHEMA and rep["passed"] is True  # mild noise stays within tolerance
    assert set(rep) >= {"model", "baseline", "tasks", "metrics", "baseline_metrics", "gates", "passed"}
    assert rep["model"]["format"] == "hf" and rep["baseline"]["name"] == "tiny-arith"
    assert rep["tasks"]["style"]["against"] == "baseline" and "style/win_rate" not in rep["baseline_metrics"]
    ppl, base_ppl = rep["metrics"]["arith-ppl/perplexity"], rep["baseline_metrics"]["arith-ppl/perplexity"]
    assert ppl != base_ppl and abs(ppl / base_ppl - 1) < 0.05  # the noise took effect, mildly (either way)
    # a report is a baseline too: its metrics are reused without running the baseline model
    (tmp_path / "base.json").write_text(json.dumps(evaluate(model=str(base_artifact.path), tasks=tasks)))
    heavy = evaluate(model=str(noisy["heavy"].path), tasks=tasks, baseline=str(tmp_path / "base.json"), gates=gates)
    assert heavy["passed"] is False and [g["passed"] for g in heavy["gates"][:2]] == [False, False]
    assert heavy["tasks"]["style"]["against"] == "baseline"  # the report kept the baseline's replies


def _cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "lifecycle.cli", "eval", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)  # the config names configs/ relative to the repo


@pytest.mark.integration
def test_gate_passes_original_and_fails_degraded_cli(base_artifact, noisy, tmp_path):
    ok = _cli("-c", "configs/eval-regression.yaml", "--set", f"model={base_artifact.path}",
              "--set", f"output={tmp_path / 'ok.json'}")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads((tmp_path / "ok.json").read_text())["passed"] is True

    out = tmp_path / "bad.json"
    bad = _cli("--model", str(noisy["heavy"].path), "--baseline", str(base_artifact.path), "--tasks",
               "addition-raw,arith-ppl,tiny-mc,redteam", "--gates", REGRESSION_GATES, "-o", str(out), "--threads", "1")
    assert bad.returncode == 1, bad.stderr[-2000:]
    assert "FAIL" in bad.stdout and "gates: FAILED" in bad.stdout
    report = json.loads(out.read_text())
    failed = {g["metric"] for g in report["gates"] if not g["passed"]}
    assert {"addition-raw/exact_match", "arith-ppl/perplexity"} <= failed
    assert "redteam/harmful_rate" not in failed
    # a gate that names a task that was not run fails as "metric missing"
    assert any(g["reason"] == "metric missing" for g in report["gates"])


@pytest.mark.integration
def test_human_export_import_cli(base_artifact, noisy, tmp_path):
    from typer.testing import CliRunner

    from lifecycle.cli import app

    sheet = tmp_path / "sheet.csv"
    r = CliRunner().invoke(app, ["eval", "human-export", "--model", str(base_artifact.path), "--baseline",
                                 str(noisy["mild"].path), "--tasks", "style", "--limit", "6", "-o", str(sheet)])
    assert r.exit_code == 0, r.output
    with open(sheet, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    for row in rows:
        row.update({c: "4" for c in ("fluency_1", "factuality_1", "safety_1", "fluency_2", "factuality_2", "safety_2")},
                   preferred="tie")
    with open(sheet, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = CliRunner().invoke(app, ["eval", "human-import", str(sheet), "--key", str(sheet.with_suffix(".key.json")),
                                 "-o", str(tmp_path / "h.json")])
    assert r.exit_code == 0, r.output
    assert "win rate (candidate) 0.500" in r.output
    assert json.loads((tmp_path / "h.json").read_text())["metrics"]["human/fluency"] == 4
