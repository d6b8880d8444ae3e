"""`lifecycle data prepare` end to end on committed fixtures: counts, invariant, artifact contract, CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lifecycle.artifact import Artifact, sha256_file
from lifecycle.config import build
from lifecycle.data.load import PREFERENCE_FIELDS, SFT_FIELDS, load_records
from lifecycle.data.prepare import PrepareConfig, run
from lifecycle.data.report import Report
from lifecycle.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "data"


def _prep(tmp_path, inputs, name="ds", **kw):
    kw.setdefault("save_hf", False)
    cfg = PrepareConfig(inputs=[str(p) for p in inputs], **kw)
    return run(cfg, tmp_path / name)


def _report(path):
    return json.loads((path / "report.json").read_text())


@pytest.mark.integration
def test_alpaca_artifact_contract(tmp_path):
    out = _prep(tmp_path, [FIX / "alpaca.jsonl"], validation_fraction=0.2, test_fraction=0.2, save_hf=True)
    art = Artifact.load(out)  # verifies every file's sha256
    assert art.format == "dataset"
    rep = _report(out)
    assert (rep["read"], rep["kept"], rep["dropped"]) == (10, 7, 3)
    assert rep["dropped_by_reason"] == {"malformed": 2, "duplicate_exact": 1}
    assert rep["read"] == rep["kept"] + rep["dropped"]
    assert art.metrics["records_train"] == 5 and art.metrics["records_validation"] == 1
    assert art.metrics["records_test"] == 1
    assert art.manifest["inputs"] == [{"input": str(FIX / "alpaca.jsonl"), "kind": "jsonl",
                                       "sha256": sha256_file(FIX / "alpaca.jsonl"), "records": 10}]
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "report.json", "token_lengths.png"):
        assert name in art.files
    assert not [f for f in art.files if f.startswith(".")]  # the staging file is gone
    assert (out / "token_lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The contract with SFT: load_records reads train.jsonl of the artifact directory.
    records = load_records(str(out), SFT_FIELDS)
    assert len(records) == 5
    assert all(r["messages"][-1]["role"] == "assistant" for r in records)
    from datasets import load_from_disk

    hf = load_from_disk(str(out / "hf"))
    assert {k: len(v) for k, v in hf.items()} == {"train": 5, "validation": 1, "test": 1}
    assert hf["train"][0] == records[0]


@pytest.mark.integration
def test_malformed_lines_reported_with_file_and_line(tmp_path):
    rep = _report(_prep(tmp_path, [FIX / "alpaca.jsonl", FIX / "alpaca.csv"]))
    assert rep["malformed"] == [
        f"{FIX / 'alpaca.jsonl'}:6: not valid JSON (Expecting value: column 42)",
        f"{FIX / 'alpaca.jsonl'}:7: alpaca record: missing field 'output'",
        f"{FIX / 'alpaca.csv'}:4: row has more cells than the header (3)",
    ]
    assert rep["dropped_by_reason"]["malformed"] == 3


@pytest.mark.integration
def test_strict_makes_a_malformed_line_fatal(tmp_path):
    with pytest.raises(UserError, match=r"alpaca.jsonl:6: not valid JSON.*strict"):
        _prep(tmp_path, [FIX / "alpaca.jsonl"], strict=True)
    assert not (tmp_path / "ds").exists()


@pytest.mark.integration
def test_every_chat_format_and_invariant(tmp_path):
    out = _prep(tmp_path, [FIX / "alpaca.csv", FIX / "alpaca.jsonl", FIX / "sharegpt.json", FIX / "messages.jsonl"],
                validation_fraction=0, test_fraction=0)
    rep = _report(out)
    formats = {Path(k).name: v for k, v in rep["formats"].items()}
    assert formats == {"alpaca.csv": "alpaca", "alpaca.jsonl": "alpaca", "sharegpt.json": "sharegpt",
                       "messages.jsonl": "messages"}
    assert rep["read"] == 22 and rep["kept"] == 15
    assert rep["dropped_by_reason"] == {"malformed": 5, "duplicate_exact": 1, "no_assistant_reply": 1}
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert {"role": "system", "content": "You are terse."} in rows[[i for i, r in enumerate(rows)
                                                                    if r["messages"][-1]["content"] == "4"][0]]["messages"]


@pytest.mark.integration
def test_mixed_kinds_are_refused(tmp_path):
    with pytest.raises(UserError, match="mix record kinds"):
        _prep(tmp_path, [FIX / "alpaca.jsonl", FIX / "preference.jsonl"])


@pytest.mark.integration
def test_forced_wrong_format_drops_everything_with_reason(tmp_path):
    with pytest.raises(UserError, match="no record survived"):
        _prep(tmp_path, [FIX / "messages.jsonl"], format="alpaca")
    assert not (tmp_path / "ds").exists()


@pytest.mark.integration
def test_preference_artifact_works_for_dpo(tmp_path):
    out = _prep(tmp_path, [FIX / "preference.jsonl"], validation_fraction=0, test_fraction=0, save_hf=True)
    records = load_records(str(out), PREFERENCE_FIELDS)
    assert len(records) == 3
    # One conversational record makes the whole set conversational (one column type for Arrow/TRL).
    assert all(isinstance(r["prompt"], list) and r["chosen"][0]["role"] == "assistant" for r in records)
    from datasets import load_from_disk

    assert load_from_disk(str(out / "hf"))["train"][0] == records[0]


@pytest.mark.integration
def test_html_in_chat_answers_is_kept_unless_asked(tmp_path):
    src = tmp_path / "html.jsonl"
    src.write_text(json.dumps({"instruction": "Make a paragraph in HTML.", "output": "<p>Hello</p>"}) + "\n")
    out = _prep(tmp_path, [src], "keep", validation_fraction=0, test_fraction=0)
    assert json.loads((out / "train.jsonl").read_text())["messages"][1]["content"] == "<p>Hello</p>"
    out = _prep(tmp_path, [src], "strip", validation_fraction=0, test_fraction=0, html_to_text="all")
    assert json.loads((out / "train.jsonl").read_text())["messages"][1]["content"] == "Hello"


@pytest.mark.integration
def test_text_and_html_inputs(tmp_path):
    out = _prep(tmp_path, [FIX / "text.txt", FIX / "page.html"], validation_fraction=0, test_fraction=0)
    texts = [json.loads(x)["text"] for x in (out / "train.jsonl").read_text().splitlines()]
    assert len(texts) == 4 and any(t.startswith("Growing tomatoes") for t in texts)
    assert not any("<" in t for t in texts)


@pytest.mark.integration
def test_filters_pii_and_token_lengths(tmp_path):
    src = tmp_path / "in.jsonl"
    rows = [{"text": "ok"}, {"text": "Email me at a.b@example.com or call +44 20 7946 0958 today please"},
            {"text": "word " * 30}, {"text": "<p>Hello <b>there</b> friend</p>"}, {"text": "  \u200b "}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = _prep(tmp_path, [src], min_chars=3, max_tokens=20, redact_pii=True, validation_fraction=0,
                test_fraction=0, dedup_near=False)
    rep = _report(out)
    assert rep["dropped_by_reason"] == {"too_short": 1, "too_many_tokens": 1, "empty": 1}
    assert rep["pii_redacted"] == {"EMAIL": 1, "PHONE": 1}
    kept = [json.loads(x)["text"] for x in (out / "train.jsonl").read_text().splitlines()]
    assert kept == ["Email me at [EMAIL] or call [PHONE] today please", "Hello there friend"]
    assert rep["token_length"]["max"] == 9 and rep["token_length"]["min"] == 3
    assert sum(rep["token_length"]["histogram"]["counts"]) == 2
    assert rep["examples"]["too_many_tokens"][0]["where"] == f"{src}:3"


@pytest.mark.integration
def test_language_filter_drops_other_languages(tmp_path):
    pytest.importorskip("py3langid")
    src = tmp_path / "lang.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in [
        "The weather is lovely today and the children are playing in the park.",
        "Le temps est magnifique aujourd'hui et les enfants jouent dans le parc.",
        "Das Wetter ist heute herrlich und die Kinder spielen im Park."]))
    rep = _report(_prep(tmp_path, [src], languages=["en"], validation_fraction=0, test_fraction=0))
    assert rep["kept"] == 1 and rep["dropped_by_reason"] == {"language": 2}


@pytest.mark.integration
def test_split_is_deterministic_by_seed(tmp_path):
    src = tmp_path / "many.jsonl"
    src.write_text("".join(json.dumps({"text": f"record number {i} about topic {i * 7 % 13}"}) + "\n"
                           for i in range(60)))
    a = _prep(tmp_path, [src], "a", seed=1, validation_fraction=0.2, test_fraction=0.1, dedup_near=False)
    b = _prep(tmp_path, [src], "b", seed=1, validation_fraction=0.2, test_fraction=0.1, dedup_near=False)
    c = _prep(tmp_path, [src], "c", seed=2, validation_fraction=0.2, test_fraction=0.1, dedup_near=False)
    assert (a / "validation.jsonl").read_text() == (b / "validation.jsonl").read_text()
    assert (a / "validation.jsonl").read_text() != (c / "validation.jsonl").read_text()
    assert [len((a / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "validation", "test")] == [42, 12, 6]


@pytest.mark.integration
def test_near_dups_reported_as_clusters(tmp_path):
    rep = _report(_prep(tmp_path, [FIX / "planted_dups.jsonl"], validation_fraction=0, test_fraction=0))
    assert rep["dropped_by_reason"] == {"duplicate_exact": 3, "duplicate_near": 3}
    assert rep["duplicate_clusters"]["count"] == 4
    assert rep["examples"]["duplicate_near"][0]["detail"].startswith("duplicate of ")


@pytest.mark.unit
def test_report_invariant_is_checked():
    r = Report(read=3, kept=1)
    r.drop("too_short", "x:1")
    with pytest.raises(AssertionError, match="invariant"):
        r.check()
    r.drop("malformed", "x:2", "bad")
    r.check()


@pytest.mark.unit
def test_config_validation_and_yaml():
    cfg = build(PrepareConfig, ROOT / "configs" / "data-prepare.yaml", {"inputs": ["x"]}, ["redact_pii=true"])
    assert cfg.redact_pii is True and cfg.near_threshold == 0.8
    assert (ROOT / "configs" / "data-prepare.yaml").read_text().startswith("# lifecycle data prepare")
    with pytest.raises(UserError, match="near_threshold"):
        PrepareConfig(near_threshold=1.5)
    with pytest.raises(UserError, match="format must be"):
        PrepareConfig(format="csv")
    with pytest.raises(UserError, match="unknown PrepareConfig field"):
        build(PrepareConfig, None, None, ["bogus=1"])


def _cli(*args, cwd=None):
    env = {**os.environ, "LIFECYCLE_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "lifecycle.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=120)


@pytest.mark.integration
def test_cli_prepare_and_errors(tmp_path):
    out = tmp_path / "cli-ds"
    r = _cli("data", "prepare", "-i", str(FIX / "alpaca.jsonl"), "-o", str(out), "-c",
             str(ROOT / "configs" / "data-prepare.yaml"), "--set", "save_hf=false")
    assert r.returncode == 0, r.stderr
    assert "kept=7" in r.stdout and "alpaca.jsonl:6: not valid JSON" in r.stderr
    r = _cli("data", "prepare", "-i", str(FIX / "alpaca.jsonl"), "-o", str(out))
    assert r.returncode == 2 and "already exists" in r.stderr
    r = _cli("data", "prepare", "-i", str(FIX / "alpaca.jsonl"), "-o", str(tmp_path / "s"), "--strict")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: ") and "alpaca.jsonl:6" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.unit
def test_help_imports_nothing_heavy():
    code = ("import sys; import lifecycle.cli; "
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'ray', 'datasketch', 'trafilatura', "
            "'httpx', 'matplotlib') if m in sys.modules]; print(heavy); assert not heavy")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.integration
def test_cli_collect_counts_failures(tmp_path):
    out = tmp_path / "raw.jsonl"
    r = _cli("data", "collect", "-i", str(FIX / "alpaca.jsonl"), "-i", str(FIX / "text.txt"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 9 + 3 and rows[-1] == {"text": rows[-1]["text"]}
    assert "1 failed (read = 13)" in r.stdout and "alpaca.jsonl:6: not valid JSON" in r.stdout


@pytest.mark.integration
def test_builtin_tokenizer_counts_tokens(tmp_path):
    rep = _report(_prep(tmp_path, [FIX / "alpaca.jsonl"], tokenizer="tiny-arith", validation_fraction=0,
                        test_fraction=0))
    assert rep["token_length"]["max"] > 20  # subword tokens outnumber the whitespace words
