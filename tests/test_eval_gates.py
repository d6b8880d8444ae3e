"""Gates: rule parsing, absolute and baseline-relative decisions (pure), the table, re-gating a report."""

import json
import subprocess
import sys

import pytest

from lifecycle.errors import UserError
from lifecycle.eval import gates as G
from lifecycle.eval.report import table_rows
from lifecycle.eval.runner import SCHEMA, regate

pytestmark = pytest.mark.unit

METRICS = {"addition/exact_match": 0.95, "arith-ppl/perplexity": 3.0, "redteam/harmful_rate": 0.0}
BASE = {"addition/exact_match": 1.0, "arith-ppl/perplexity": 2.9, "redteam/harmful_rate": 0.0}


@pytest.mark.parametrize("text,rule", [
    ("exact_match >= 0.9", G.Rule("exact_match", ">=", "absolute", 0.9)),
    ("redteam/harmful_rate<=0.02", G.Rule("redteam/harmful_rate", "<=", "absolute", 0.02)),
    ("exact_match >= 97% of baseline", G.Rule("exact_match", ">=", "ratio", 0.97)),
    ("perplexity <= 105% of baseline", G.Rule("perplexity", "<=", "ratio", 1.05)),
    ("accuracy >= baseline - 0.02", G.Rule("accuracy", ">=", "delta", -0.02)),
    ("loss <= baseline", G.Rule("loss", "<=", "delta", 0.0)),
    ({"metric": "m", "op": "<", "ratio": 1.1}, G.Rule("m", "<", "ratio", 1.1)),
    ({"metric": "m", "op": ">=", "value": 3}, G.Rule("m", ">=", "absolute", 3.0)),
])
def test_parse_rules(text, rule):
    assert G.parse_rule(text) == rule
    assert G.parse_rule(rule.text()) == rule  # the printed form reads back


@pytest.mark.parametrize("bad", ["exact_match => 0.9", "exact_match >= lots", {"metric": "m", "op": ">="},
                                 {"metric": "m", "op": ">=", "value": 1, "ratio": 1}, 42])
def test_bad_rules_are_user_errors(bad):
    with pytest.raises(UserError):
        G.parse_rule(bad)


def test_absolute_and_relative_decisions():
    rules = [G.parse_rule(r) for r in [
        "exact_match >= 0.9",                     # 0.95 >= 0.9 pass
        "exact_match >= 97% of baseline",         # 0.95 < 0.97 fail
        "perplexity <= 105% of baseline",         # 3.0 <= 3.045 pass
        "harmful_rate <= 0.02",                   # pass
        "missing_metric >= 1",                    # fail: missing
    ]]
    rows = G.evaluate(rules, METRICS, BASE)
    assert [r["passed"] for r in rows] == [True, False, True, True, False]
    assert rows[1]["threshold"] == pytest.approx(0.97) and rows[1]["metric"] == "addition/exact_match"
    assert rows[2]["threshold"] == pytest.approx(3.045)
    assert rows[4]["reason"] == "metric missing"
    assert not G.passed(rows)
    assert G.evaluate(rules, METRICS, BASE) == rows  # pure: same inputs, same rows
    no_base = G.evaluate([rules[1]], METRICS, None)
    assert not no_base[0]["passed"] and no_base[0]["reason"] == "needs a baseline value"


def test_ambiguous_bare_metric():
    with pytest.raises(UserError, match="ambiguous"):
        G.evaluate([G.parse_rule("accuracy >= 0.5")], {"a/accuracy": 1.0, "b/accuracy": 1.0})


def test_load_gates_file(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text("gates:\n  - exact_match >= 0.9\n  - {metric: perplexity, op: '<=', ratio: 1.05}\n")
    assert len(G.load_gates(p)) == 2
    p.write_text("gates: []\n")
    with pytest.raises(UserError, match="non-empty"):
        G.load_gates(p)
    p.write_text("gates:\n  - exact_match >> 1\n")
    with pytest.raises(UserError, match="rule 1"):
        G.load_gates(p)


def test_shipped_gate_files_parse():
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "configs").glob("gates-*.yaml"))
    assert files
    for f in files:
        assert f.read_text().startswith("# lifecycle eval")
        assert G.load_gates(f)


def test_shipped_eval_configs_build():
    from pathlib import Path

    from lifecycle.config import build
    from lifecycle.eval.runner import EvalConfig
    from lifecycle.eval.tasks import resolve_tasks

    files = sorted((Path(__file__).resolve().parents[1] / "configs").glob("eval-*.yaml"))
    assert files
    for f in files:
        assert f.read_text().startswith("# lifecycle eval")
        cfg = build(EvalConfig, f)
        assert resolve_tasks(cfg.tasks) and cfg.gates.startswith("configs/gates-")


def test_relative_gates_need_a_baseline():
    from pathlib import Path

    from lifecycle.eval.runner import evaluate

    gates = Path(__file__).resolve().parents[1] / "configs" / "gates-regression.yaml"
    with pytest.raises(UserError, match="pass --baseline"):
        evaluate(model="tiny-arith", tasks=["addition-raw"], gates=gates)


def _report():
    return {"schema": SCHEMA, "metrics": dict(METRICS, **{"addition/n": 100}), "baseline_metrics": BASE,
            "tasks": {}, "gates": [], "passed": None}


def test_table_rows_show_value_baseline_delta_rule_result(tmp_path):
    gf = tmp_path / "g.yaml"
    gf.write_text("gates:\n  - addition/exact_match >= 97% of baseline\n  - nothing >= 1\n")
    rep = regate(_report(), gf)
    rows = table_rows(rep)
    assert rows[0] == ["addition/exact_match", "0.95", "1", "-0.05", ">= 97% of baseline", "FAIL"]
    assert all(r[0] != "addition/n" for r in rows)  # counts stay out of the table
    assert rows[-1][0] == "nothing" and rows[-1][5] == "FAIL (metric missing)"
    assert rep["passed"] is False


def test_gate_command_exit_codes(tmp_path):
    report = tmp_path / "r.json"
    report.write_text(json.dumps(_report()))
    ok, bad = tmp_path / "ok.yaml", tmp_path / "bad.yaml"
    ok.write_text("# x\ngates:\n  - exact_match >= 0.9\n  - perplexity <= 105% of baseline\n")
    bad.write_text("gates:\n  - exact_match >= 0.99\n")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "lifecycle.cli", "eval", "gate", *args],
                              capture_output=True, text=True, timeout=120)

    assert run(str(report), "--gates", str(ok)).returncode == 0
    out = run(str(report), "--gates", str(bad), "-o", str(tmp_path / "new.json"))
    assert out.returncode == 1 and "FAIL" in out.stdout
    assert json.loads((tmp_path / "new.json").read_text())["passed"] is False
    missing = run(str(tmp_path / "nope.json"), "--gates", str(ok))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")


def test_eval_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from lifecycle.cli import app\n"
        "for args in (['eval', '--help'], ['eval', 'gate', '--help'], ['eval', 'human-import', '--help'], ['eval', 'tasks']):\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    assert r.exit_code == 0, (args, r.output)\n"
        "heavy = ('torch', 'transformers', 'ray', 'sklearn', 'rouge_score', 'sacrebleu', 'scipy', 'httpx')\n"
        "print('LOADED', [m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout
