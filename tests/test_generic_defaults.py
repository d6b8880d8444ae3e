"""Sums stay the defaults for the arithmetic demo; every other model gets the built-in generic set.

    python -m pytest tests/test_generic_defaults.py -q

The "other model" is the built-in checkpoint copied without its manifest: an external Hugging Face folder,
so `task_profile` calls it generic while it stays tiny and fast.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from lifecycle.data.generic import generic_chats, generic_texts, records
from lifecycle.errors import UserError
from lifecycle.extras import install_hint

SUM = re.compile(r"\d+\s*\+\s*\d+\s*=")
CJK = re.compile(r"[\u4e00-\u9fff]")
EMOJI = re.compile(r"[\U0001F300-\U0001FAFF\u2600-\u27BF]")


@pytest.fixture(scope="module")
def generic_ckpt(tmp_path_factory, base_artifact):
    from lifecycle.artifact import MANIFEST
    from lifecycle.models import resolve

    dest = tmp_path_factory.mktemp("hf") / "chat-model"
    shutil.copytree(base_artifact.path, dest, ignore=shutil.ignore_patterns(MANIFEST, "train_log.json"))
    return resolve(str(dest))


@pytest.fixture(scope="module")
def generic_engine(generic_ckpt, torch_one_thread):
    from lifecycle.engine import load_engine

    return load_engine(generic_ckpt)


def _noisy(engine, scale=0.02):
    """A perturbed copy of an HF engine: what a lossy quantizer would hand back."""
    import copy

    import torch

    from lifecycle.engines.hf import HFEngine

    model = copy.deepcopy(engine.model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return HFEngine(model, engine.tok, engine.artifact)


# ---- the set itself ----------------------------------------------------------------------------------------
@pytest.mark.unit
def test_generic_set_is_seeded_split_and_multilingual():
    assert generic_texts(40, seed=3) == generic_texts(40, seed=3) != generic_texts(40, seed=4)
    assert generic_chats(40, seed=3) == generic_chats(40, seed=3) != generic_chats(40, seed=4)
    for kind in ("texts", "chats"):
        rows, held, calib = records(kind), records(kind, "held"), records(kind, "calibration")
        assert 60 <= len(rows) <= 100 and len(held) + len(calib) == len(rows)
        key = (lambda r: r.get("text") or json.dumps(r["messages"], ensure_ascii=False))
        assert not {key(r) for r in held} & {key(r) for r in calib}
        assert {"en", "zh", "fr", "de", "es"} <= {r["lang"] for r in rows}
        assert {r["lang"] for r in held} >= {"en", "zh"}
        blob = [key(r) for r in rows]
        assert sum(bool(CJK.search(t)) for t in blob) >= 15 and sum(bool(EMOJI.search(t)) for t in blob) >= 3
        assert not any(SUM.search(t) for t in blob)
    assert len(set(generic_texts(30, seed=0, split="held"))) == len(records("texts", "held"))  # one pass first
    chats = [r["messages"] for r in records("chats")]
    assert any(c[0]["role"] == "system" for c in chats) and all(c[-1]["role"] == "user" for c in chats)
    assert {r["kind"] for r in records("texts")} >= {"fact", "howto", "dialogue", "code", "numbers"}


@pytest.mark.integration
def test_task_profile_picks_the_set(base_artifact, generic_ckpt):
    from lifecycle.models import task_profile
    from perf.prompts import choose_kind

    assert task_profile(base_artifact) == "arith" and task_profile(generic_ckpt) == "generic"
    assert choose_kind("auto", base_artifact) == "arith" and choose_kind("auto", generic_ckpt) == "generic"
    assert choose_kind("auto", "tiny-arith") == "arith" and choose_kind("auto", "not-a-local-model") == "generic"
    assert choose_kind("arith", generic_ckpt) == "arith" and choose_kind("auto") == "generic"
    with pytest.raises(UserError, match="auto, arith or generic"):
        choose_kind("sums")


# ---- quantization: parity and GPTQ calibration ---------------------------------------------------------------
@pytest.mark.integration
def test_parity_on_a_generic_model_reports_nll_not_exact_match(generic_engine, tmp_path):
    from lifecycle.data.generic import GenericProbes
    from quantize.parity import compare

    TOKENS_PER_TEXT = GenericProbes.TOKENS_PER_TEXT

    tok = generic_engine.tok
    same = compare(generic_engine, generic_engine, tok, prompts=6, eval_items=50)
    assert same["parity_set"] == "generic" and same["top1_agreement"] == 1.0 and same["greedy_agreement"] == 1.0
    assert same["nll_delta"] == 0.0 and same["mean_kl"] < 1e-9
    assert not {"exact_match", "raw_exact_match", "parent_exact_match", "eval_items"} & set(same)

    noisy = compare(generic_engine, _noisy(generic_engine), tok, prompts=6, eval_items=50)
    assert noisy["top1_agreement"] < 1.0 and noisy["mean_kl"] > 1e-4
    assert noisy["nll_delta"] == pytest.approx(noisy["nll_per_token"] - noisy["parent_nll_per_token"], abs=1e-5)
    assert noisy["parent_nll_per_token"] == same["nll_per_token"]
    assert 0 < noisy["parity_positions"] <= 12 * TOKENS_PER_TEXT and noisy["greedy_prompts"] >= 6

    # a user's JSONL: the NLL is the engine's own log-likelihood of each text after its first token
    texts = ["The harbour was quiet before dawn.", "山间的小路弯弯曲曲。"]
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts) + "\n", encoding="utf-8")
    own = compare(generic_engine, generic_engine, tok, prompts=8, texts=str(f))
    scores = generic_engine.score([("", t) for t in texts])
    expected = -sum(s.logprob for s in scores) / sum(s.num_tokens for s in scores)
    assert own["parity_set"] == str(f) and own["parent_nll_per_token"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.integration
def test_parity_keeps_sums_and_exact_match_for_the_demo(hf_engine):
    from quantize.parity import compare

    m = compare(hf_engine, _noisy(hf_engine, 0.005), hf_engine.tok, prompts=4, eval_items=10)
    assert m["parity_set"] == "arith" and m["eval_items"] == 10 and m["parent_raw_exact_match"] >= 0.8
    assert "nll_delta" not in m
    forced = compare(hf_engine, hf_engine, hf_engine.tok, prompts=4, eval_items=10, texts="generic")
    assert forced["parity_set"] == "generic" and "exact_match" not in forced


@pytest.mark.integration
def test_quantize_driver_on_a_generic_model(generic_ckpt, tmp_path):
    from lifecycle.artifact import Artifact
    from quantize.driver import quantize

    out = quantize(generic_ckpt.path, "int8", tmp_path / "q", ["eval_items=20", "parity_prompts=4", "threads=1"])
    m = Artifact.load(out).metrics
    assert m["parity_set"] == "generic" and "exact_match" not in m and m["top1_agreement"] > 0.5
    assert {"nll_per_token", "parent_nll_per_token", "nll_delta"} <= set(m)
    with pytest.raises(UserError, match="parity_texts"):
        quantize(generic_ckpt.path, "int8", tmp_path / "x", ["parity_texts=nowhere.jsonl"])


@pytest.mark.integration
def test_gptq_calibration_follows_the_profile(generic_engine):
    from quantize.gptq import Options, calibration_texts

    tok = generic_engine.tok
    opts = Options(samples=40)
    generic = calibration_texts(opts, tok, "generic")
    assert len(generic) == 40 and not any(SUM.search(t) for t in generic)
    assert sum("<|im_start|>user" in t for t in generic) == 20 and any(CJK.search(t) for t in generic)
    held = {r["text"] for r in records("texts", "held")}
    assert not held & set(generic)
    sums = calibration_texts(opts, tok, "arith")
    assert sum(bool(SUM.search(t)) for t in sums) >= 20
    assert calibration_texts(Options(samples=8, calibration="generic"), tok, "arith") == generic[:8]


# ---- serving: bench prompts, Locust prompts, the deploy smoke test ------------------------------------------
@pytest.mark.integration
def test_bench_prompt_sets(monkeypatch, base_artifact, generic_ckpt):
    from perf.bench import runner
    from perf.prompts import prompt_set

    g = prompt_set(12, 24, 8, seed=1, kind="generic")
    assert g == prompt_set(12, 24, 8, seed=1, kind="generic") != prompt_set(12, 24, 8, seed=2, kind="generic")
    users = [p["messages"][-1]["content"] for p in g]
    known = {r["messages"][-1]["content"] for r in records("chats")}
    assert set(users) <= known and all(p["max_tokens"] == 8 for p in g)
    long = prompt_set(12, 500, 8, seed=1, kind="generic")
    assert all(len(p["messages"][-1]["content"]) == 500 for p in long)
    assert [p["messages"][-1]["content"].endswith(u) for p, u in zip(long, users)] == [True] * 12

    seen = {}

    def fake_bench(spec, cfg, prompts_for, workdir, progress=print):
        from lifecycle.models import resolve

        kind, prompts = prompts_for(resolve(spec, verify=False))
        seen[spec] = prompts
        return {"label": spec, "kind": "artifact", "prompt_set": kind, "errors": 0, "levels": []}

    monkeypatch.setattr(runner, "bench_artifact", fake_bench)
    cfg = runner.BenchConfig(models=[str(base_artifact.path), str(generic_ckpt.path)], bandwidth=False, num_prompts=5)
    result = runner.run(cfg, progress=lambda *_: None)
    assert [t["prompt_set"] for t in result["targets"]] == ["arith", "generic"]
    arith, generic = seen[str(base_artifact.path)], seen[str(generic_ckpt.path)]
    assert all(SUM.search(p["prompt"]) for p in arith) and all("messages" in p for p in generic)
    forced = runner.run(runner.BenchConfig(models=[str(generic_ckpt.path)], bandwidth=False, prompt_set="arith"),
                        progress=lambda *_: None)
    assert forced["targets"][0]["prompt_set"] == "arith"


class _Recorder:
    """Wraps an engine and keeps every prompt the server hands it."""

    def __init__(self, engine):
        self.engine, self.prompts = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def generate(self, prompts, params=None):
        self.prompts += prompts
        return self.engine.generate(prompts, params)

    def stream(self, prompt, params=None):
        self.prompts.append(prompt)
        return self.engine.stream(prompt, params)


@pytest.mark.integration
def test_locust_sends_generic_prompts_to_an_unknown_model(tmp_path):
    from perf.loadtest.run import prompt_set_for, run_loadtest
    from serve.app import build_app
    from serve.host import EngineHost
    from serve.local import LocalBackend, ServerThread
    from serve.mock import MockEngine

    if shutil.which("locust") is None:
        pytest.skip(install_hint("locust"))
    rec = _Recorder(MockEngine(context_length=4096))
    with ServerThread(build_app(LocalBackend({"someones-chat-model": EngineHost(rec, "someones-chat-model",
                                                                               stream_interval_s=0.0)}))) as srv:
        assert prompt_set_for(srv.url) == "generic"
        assert prompt_set_for(srv.url, model="tiny-arith") == "arith"
        s = run_loadtest(srv.url, users=2, spawn_rate=2, duration="2s", out=tmp_path, max_tokens=4, seed=1)
    assert s["prompt_set"] == "generic" and s["failures"] == 0 and s["requests"] > 3
    texts = [p if isinstance(p, str) else p[-1]["content"] for p in rec.prompts]
    assert texts and not any(SUM.search(t) for t in texts)
    known = {r["messages"][-1]["content"] for r in records("chats")}
    assert any(t in known for t in texts)


@pytest.mark.integration
def test_generic_smoke_test_on_a_real_server(generic_engine, hf_engine):
    from lifecycle.release.deploy import smoke_test
    from serve.app import build_app
    from serve.host import EngineHost
    from serve.local import LocalBackend, ServerThread

    hosts = {"chat-model": EngineHost(generic_engine, "chat-model"), "tiny-arith": EngineHost(hf_engine, "tiny-arith")}
    with ServerThread(build_app(LocalBackend(hosts))) as srv:
        g = smoke_test(srv.url, "chat-model", profile="generic")
        a = smoke_test(srv.url, "tiny-arith")
        missing = smoke_test(srv.url, "not-served", profile="generic")
    assert g["ok"] and g["status"] == 200 and g["reply"] and g["correct"] is None
    assert g["checks"] == {"reply": True, "stream_matches": True, "chinese": True} and g["streamed"] == g["reply"]
    assert set(a) == {"ok", "status", "reply", "correct"} and a["status"] == 200 and isinstance(a["correct"], bool)
    assert not missing["ok"] and missing["status"] == 404


@pytest.mark.integration
def test_deploy_run_on_a_generic_model(generic_ckpt, tmp_path):
    from lifecycle.release.deploy import run

    if shutil.which("locust") is None:
        pytest.skip(install_hint("locust"))
    opts = {"engine": "local", "users": 2, "spawn_rate": 2, "duration": "2s", "slo": "error_rate=0",
            "startup_timeout_s": 120}
    dep = run("chat-model", generic_ckpt.path, opts, tmp_path, log=lambda *_: None, profile="generic")
    assert dep["smoke"]["ok"] and dep["smoke"]["checks"]["chinese"]
    assert dep["loadtest"]["prompt_set"] == "generic" and dep["loadtest"]["requests"] > 0
    assert dep["loadtest"]["failures"] == 0 and all(c["passed"] for c in dep["slo"])


# ---- eval tasks -----------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_generic_eval_tasks_through_the_cli(tmp_path):
    from typer.testing import CliRunner

    from lifecycle.cli import app
    from lifecycle.eval.tasks import BUILTIN_DIR

    out = tmp_path / "eval.json"
    res = CliRunner().invoke(app, ["eval", "--model", "tiny-arith", "--tasks", "generic-mc,ifeval-generic,generic-ppl",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads(out.read_text())["metrics"]

    def lines(name):
        return sum(1 for line in (BUILTIN_DIR / name).read_text(encoding="utf-8").splitlines() if line.strip())

    assert m["generic-mc/n"] == lines("generic-mc.jsonl") and {"generic-mc/accuracy/en", "generic-mc/accuracy/zh"} <= set(m)
    assert 0.0 <= m["generic-mc/accuracy"] <= 1.0
    assert m["ifeval-generic/n"] == lines("ifeval-generic.jsonl")
    assert 0.0 <= m["ifeval-generic/prompt_accuracy"] <= m["ifeval-generic/instruction_accuracy"] <= 1.0
    assert m["generic-ppl/n"] == lines("generic-ppl.jsonl") and m["generic-ppl/perplexity"] > 1.0
    ppl_texts = {json.loads(line)["text"] for line in (BUILTIN_DIR / "generic-ppl.jsonl").read_text().splitlines()}
    assert not ppl_texts & {r["text"] for r in records("texts")}  # held out from the built-in set
