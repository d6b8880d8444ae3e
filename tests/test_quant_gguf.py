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
from lifecycle.extras import install_hint

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("llama_cpp", "conversion", "gguf")),
    reason=install_hint("llama_cpp"))]
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


# ---------------------------------------------------------------------------------------- real checkpoints

def _vm() -> dict:
    """This process's current virtual size and resident set, in MiB (Linux)."""
    rows = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(rows[k].split()[0]) // 1024 for k in ("VmSize", "VmRSS")}


@pytest.fixture(scope="module")
def llama3_gguf(tmp_path_factory, family_checkpoints, torch_one_thread):
    """Llama-3 shape (128256 tokens, 131072 positions, three EOS ids, bf16) through `lifecycle quantize`:
    llama.cpp used to open all 131072 positions with a (131072, 128264) float32 logits array (62.6 GiB)."""
    from quantize.driver import quantize

    src = family_checkpoints("llama3")
    return src, quantize(src, "gguf-f16", tmp_path_factory.mktemp("llama3") / "f16",
                         ["eval_items=0", "parity_prompts=1", "threads=1"])


def test_gguf_llama3_opens_a_bounded_context(llama3_gguf):
    _, path = llama3_gguf
    before = _vm()
    engine = load_engine(path, threads=1)
    try:
        loaded = _vm()
        assert engine.trained_context == 131072 and engine.context_length == 4096 and engine.llm.n_ctx() == 4096
        assert {128001, 128008, 128009} <= set(engine.eos_ids)  # generation_config's three, <|eot_id|> first
        text = "Bounded 你好，世界！ Ça coûte 12 € 🦙. " * 6
        assert len(engine.tok(text).input_ids) >= 100
        [s] = engine.score([(text[:20], text[20:])])
        assert s.num_tokens > 90 and s.logprob < 0
        after = _vm()
        # llama.cpp's buffers are virtual until used; the old logits array alone was 64,000+ MiB of them
        assert loaded["VmSize"] - before["VmSize"] < 2048, (before, loaded)
        assert after["VmRSS"] - before["VmRSS"] < 400, (before, loaded, after)
        with pytest.raises(UserError, match="exceeds the context length 4096"):
            engine.generate(["Hello"], SamplingParams(max_tokens=4096))
    finally:
        engine.close()
    small = load_engine(path, threads=1, context_length=256)
    assert small.context_length == 256 and small.llm.n_ctx() == 256
    small.close()
    with pytest.raises(UserError, match="exceeds the model's trained context 131072"):
        load_engine(path, threads=1, context_length=262144)


def test_gguf_f16_logits_and_scores_match_hf_on_llama3(llama3_gguf):
    """Per-position log-probabilities at every position (the parity report's path) and continuation scores
    (rows flagged from the continuation on, reusing the KV cache of the context) agree with transformers."""
    import numpy as np

    from quantize.parity import _log_softmax, next_token_logits

    src, path = llama3_gguf
    hf = load_engine(src, threads=1, dtype="float32")
    engine = load_engine(path, threads=1)
    try:
        text = "Scores: 12+34=46. 数学很好！ Voilà 🦙 " * 3
        ids = hf.tok(text).input_ids
        lg, lh = engine.logits(ids), next_token_logits(hf, ids)
        assert lg.shape == lh.shape == (len(ids), 128256)
        assert np.abs(_log_softmax(lg) - _log_softmax(lh)).max() < 0.01
        same = [np.corrcoef(lg[i], lh[i])[0, 1] for i in range(len(ids))]
        shifted = [np.corrcoef(lg[i], lh[i + 1])[0, 1] for i in range(len(ids) - 1)]
        assert min(same) > 0.999 and max(shifted) < 0.95  # random weights: rows differ by position
        requests = [(text[:25], text[25:]), ("Scores: 12+34=", "46"), (text, " 🦙")]
        for a, b in zip(engine.score(requests), hf.score(requests)):
            assert a.num_tokens == b.num_tokens and abs(a.logprob - b.logprob) < 0.01 * a.num_tokens, (a, b)
        # score (prefix reused from the cache) == the sum over the rows of a full evaluation
        ctx, cont = requests[0]
        enc = engine.tok(ctx + cont, return_offsets_mapping=True)
        first = next(i for i, (_, e) in enumerate(enc.offset_mapping) if e > len(ctx))
        lp = _log_softmax(engine.logits(enc.input_ids))
        expect = sum(lp[i - 1, enc.input_ids[i]] for i in range(first, len(enc.input_ids)))
        assert abs(engine.score([(ctx, cont)])[0].logprob - expect) < 1e-3
    finally:
        engine.close()
        hf.close()


@pytest.fixture(scope="module")
def multi_eos_gguf(tmp_path_factory, base_artifact, torch_one_thread):
    """The built-in model with generation_config listing a second EOS id ("!", 490) and a 131072 context."""
    from quantize.driver import quantize

    src = tmp_path_factory.mktemp("multi-eos") / "model"
    src.mkdir()
    for f in base_artifact.path.iterdir():
        if f.name != "manifest.json":
            shutil.copyfile(f, src / f.name)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "max_position_embeddings": 131072}))
    gen = json.loads((src / "generation_config.json").read_text())
    (src / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": [4, 490]}))
    return quantize(src, "gguf-f16", src.parent / "f16", ["eval_items=0", "parity_prompts=1", "threads=1"])


def test_gguf_stops_on_every_generation_config_eos(multi_eos_gguf, gguf_artifacts):
    chat = [{"role": "user", "content": "What is 2+3?"}]
    plain = load_engine(gguf_artifacts["gguf-f16"].path, threads=1)
    engine = load_engine(multi_eos_gguf, threads=1)
    try:
        assert plain.eos_ids == [4] and engine.eos_ids == [4, 490] and engine.context_length == 4096
        [full] = plain.generate([chat], SamplingParams(max_tokens=8))
        assert full.text.startswith("Sure! ") and full.completion_tokens > 2  # the base goes on after "!"
        [cut] = engine.generate([chat], SamplingParams(max_tokens=8))
        assert (cut.text, cut.finish_reason, cut.completion_tokens) == ("Sure!", "stop", 2)
        events = list(engine.stream(chat, SamplingParams(max_tokens=8)))
        assert "".join(e.text for e in events) == "Sure!" and events[-1].finish_reason == "stop"
    finally:
        plain.close()
        engine.close()
