"""ONNX formats on the trained built-in base (onnxruntime-genai model builder): fp32, int8 and int4 MatMulNBits.

tiny-arith has head size 32, which onnxruntime's CPU GroupQueryAttention runs, and 128/256-wide rows, which
the int8/int4 blocks (32) divide. Floors per bit width, with 40 held-out sums and 16 parity prompts
(teacher-forced next-token comparison against the transformers parent; measured values in brackets):
- onnx (fp32): the same function in another runtime: top-1 1.0, max |dlogprob| < 1e-3, greedy 1.0, raw exact
  match equal to the parent's [top-1 1.000, KL 1e-12, max |dlogprob| 5e-5];
- onnx-int8 (8-bit weights, int8 activations): top-1 >= 0.95, KL < 0.002, greedy >= 0.85, raw exact match
  within 0.05 [top-1 0.979, KL 2.7e-4, greedy 0.97, raw exact match 1.0 = parent];
- onnx-int4 (4-bit weights, blocks of 32, the tied lm_head included): top-1 >= 0.65, KL < 0.1, greedy >= 0.6,
  raw exact match within 0.10 [top-1 0.737, KL 0.037, greedy 0.81, raw exact match 1.0 = parent].
"""

import importlib.util
import os
import json
import shutil

import pytest

from lifecycle.artifact import Artifact
from lifecycle.engine import SamplingParams, load_engine
from lifecycle.errors import UserError
from lifecycle.extras import install_hint

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(importlib.util.find_spec("onnxruntime_genai") is None or importlib.util.find_spec("onnx") is None,
                                 reason=install_hint("onnxruntime_genai"))]
NAMES = ["onnx", "onnx-int8", "onnx-int4"]
SETS = ["eval_items=40", "parity_prompts=16", "threads=1"]
FLOORS = {  # top-1, max mean KL, greedy, max raw exact-match drop
    "onnx": (1.0, 1e-6, 1.0, 0.0),
    "onnx-int8": (0.95, 2e-3, 0.85, 0.05),
    "onnx-int4": (0.65, 0.1, 0.6, 0.10),
}


@pytest.fixture(scope="session")
def onnx_artifacts(tmp_path_factory, base_artifact, torch_one_thread):
    from quantize.driver import quantize

    root, cache = tmp_path_factory.mktemp("quant-onnx"), {}
    return {n: Artifact.load(quantize(base_artifact.path, n, root / n, SETS, parent_cache=cache)) for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_onnx_parity_on_trained_base(name, onnx_artifacts, base_artifact):
    art = onnx_artifacts[name]
    m = art.metrics
    top1, kl, greedy, em_drop = FLOORS[name]
    assert art.format == name and art.parent["sha256"] == base_artifact.manifest_sha256
    assert m["top1_agreement"] >= top1 and m["mean_kl"] < kl and m["greedy_agreement"] >= greedy, m
    assert m["raw_exact_match"] >= m["parent_raw_exact_match"] - em_drop, m
    assert m["parent_raw_exact_match"] >= 0.85, m  # the parent really adds, so agreement means something
    assert m["onnx_ops"]["GroupQueryAttention"] == 4 and m["chat_template"] is True
    if name == "onnx":
        assert m["max_logprob_diff"] < 1e-3, m


def test_onnx_quantized_ops_and_sizes(onnx_artifacts):
    fp32, int8, int4 = (onnx_artifacts[n].metrics for n in ("onnx", "onnx-int8", "onnx-int4"))
    assert "MatMulNBits" not in fp32["onnx_ops"] and fp32["onnx_ops"]["MatMul"] == 21
    # every projection (4 layers x qkv, o, gate, up, down) and the tied lm_head
    assert int8["matmulnbits_bits"] == {"8": 21} and "MatMul" not in int8["onnx_ops"], int8
    assert int4["matmulnbits_bits"] == {"4": 21} and "MatMul" not in int4["onnx_ops"], int4
    assert fp32["size_bytes"] > int8["size_bytes"] > int4["size_bytes"]
    assert int8["ratio_to_parent"] > 2.0 and int4["ratio_to_parent"] > 4.0, (int8, int4)


def test_onnx_engine_generates_streams_scores(onnx_artifacts):
    art = onnx_artifacts["onnx"]
    engine = load_engine(art.path, threads=1)
    params = SamplingParams(max_tokens=6, stop=["\n"])
    [c] = engine.generate(["12+34="], params)
    assert c.text == "46"  # the trained base adds, in onnxruntime as in torch
    assert "".join(ev.text for ev in engine.stream("12+34=", params)) == c.text
    [chat] = engine.generate([[{"role": "user", "content": "What is 2+3?"}]], SamplingParams(max_tokens=6))
    assert chat.prompt_tokens > 5 and (art.path / "chat_template.jinja").is_file()
    [s] = engine.score([("12+34=", "46")])
    assert s.num_tokens >= 1 and s.logprob < 0 and s.is_greedy
    [t] = engine.generate(["12+34="], SamplingParams(max_tokens=6, temperature=1.0, seed=3))
    [t2] = engine.generate(["12+34="], SamplingParams(max_tokens=6, temperature=1.0, seed=3))
    assert t.text == t2.text
    # the engine rewinds and reuses one Generator: after other requests, the same prompt gives the same logits
    fresh = load_engine(art.path, threads=1)
    ids = engine.tok("7+8=").input_ids
    assert (engine.logits(ids) == fresh.logits(ids)).all()
    assert engine.generate(["12+34="], params)[0].text == "46"


def test_onnx_int8_engine_adds(onnx_artifacts):
    engine = load_engine(onnx_artifacts["onnx-int8"].path, threads=1)
    [c] = engine.generate(["12+34="], SamplingParams(max_tokens=6, stop=["\n"]))
    assert c.text == "46"


def test_onnx_tamper_refused(onnx_artifacts, tmp_path):
    copy = tmp_path / "onnx"
    shutil.copytree(onnx_artifacts["onnx-int8"].path, copy)
    (copy / "genai_config.json").write_text("{}")
    with pytest.raises(UserError, match="sha256 mismatch"):
        load_engine(str(copy))


def _reshaped_copy(base_artifact, dest, **shape):
    """A plain HF folder (no manifest) with the base's files and a changed config: the checks read only that."""
    dest.mkdir()
    for f in base_artifact.path.iterdir():
        if f.name != "manifest.json":
            shutil.copyfile(f, dest / f.name)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(shape)
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


@pytest.mark.parametrize("name", NAMES)
def test_onnx_refuses_head_size_24_up_front(name, base_artifact, tmp_path):
    from quantize.driver import quantize

    model = _reshaped_copy(base_artifact, tmp_path / "head24", hidden_size=96, num_attention_heads=4, head_dim=24)
    with pytest.raises(UserError, match="multiple of 16"):
        quantize(model, name, tmp_path / "x", SETS)
    assert not (tmp_path / "x").exists()


def test_onnx_int8_block_size_checked_up_front(base_artifact, tmp_path):
    from quantize.driver import quantize

    model = _reshaped_copy(base_artifact, tmp_path / "w", intermediate_size=272)
    with pytest.raises(UserError, match="intermediate_size 272 not a multiple of int8_block_size 32"):
        quantize(model, "onnx-int8", tmp_path / "x", SETS)
    with pytest.raises(UserError, match="int8_block_size must be"):
        quantize(base_artifact.path, "onnx-int8", tmp_path / "y", ["int8_block_size=48"])


GROWTH = """
import sys
from lifecycle.engine import SamplingParams, load_engine
def rss(): return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) // 1024
e = load_engine(sys.argv[1], threads=1, context_length=int(sys.argv[2]))
before = rss()
e.generate([[{'role': 'user', 'content': 'What is 2+3?'}]], SamplingParams(max_tokens=2))
print(e.context_length, rss() - before)
"""


def _generate_growth_mib(path, context_length: int) -> tuple[int, int]:
    """(context opened, RSS growth of the first generation) in a fresh process: in a long test session the
    allocator reuses freed pages, and growth measured in-process says little."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", GROWTH, str(path), str(context_length)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    ctx, growth = out.stdout.split()[-2:]
    return int(ctx), int(growth)


@pytest.fixture(scope="module")
def long_multi_eos_onnx(tmp_path_factory, base_artifact, torch_one_thread):
    """The built-in model declaring 131072 positions (genai_config context_length) and a second EOS id
    ("!", 490) in generation_config.json."""
    from quantize.driver import quantize

    src = _reshaped_copy(base_artifact, tmp_path_factory.mktemp("long-onnx") / "model", max_position_embeddings=131072)
    gen = json.loads((src / "generation_config.json").read_text())
    (src / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": [4, 490]}))
    return quantize(src, "onnx", src.parent / "onnx", ["eval_items=0", "parity_prompts=1", "threads=1"])


def test_onnx_bounded_context_and_every_eos(long_multi_eos_onnx, onnx_artifacts):
    """onnxruntime-genai allocates the KV cache for `max_length` positions when a Generator is made: the
    engine opens min(trained, 4096) unless asked; and it stops on generation_config's second EOS."""
    path = long_multi_eos_onnx
    assert json.loads((path / "genai_config.json").read_text())["model"]["context_length"] == 131072
    chat = [{"role": "user", "content": "What is 2+3?"}]
    engine = load_engine(path, threads=1)
    [cut] = engine.generate([chat], SamplingParams(max_tokens=8))
    assert engine.context_length == 4096 and engine.eos_ids == [4, 490]
    assert (cut.text, cut.finish_reason, cut.completion_tokens) == ("Sure!", "stop", 2)
    [full] = load_engine(onnx_artifacts["onnx"].path, threads=1).generate([chat], SamplingParams(max_tokens=8))
    assert full.text.startswith("Sure! ") and full.completion_tokens > 2  # the base goes on after "!"
    with pytest.raises(UserError, match="exceeds the context length 4096"):
        engine.generate(["1+1="], SamplingParams(max_tokens=4096))
    engine.close()
    # the whole declared context, asked for explicitly: 4 layers x K,V x 2 heads x 131072 x 32 x fp32 = 256 MiB
    bounded, wide = _generate_growth_mib(path, 0), _generate_growth_mib(path, 131072)
    assert bounded[0] == 4096 and wide[0] == 131072 and wide[1] > 200 > 40 > bounded[1], (bounded, wide)
    with pytest.raises(UserError, match="exceeds the model's trained context 131072"):
        load_engine(path, threads=1, context_length=131073)
