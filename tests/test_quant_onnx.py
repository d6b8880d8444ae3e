"""ONNX formats (onnxruntime-genai model builder; fp32 and int4 MatMulNBits).

onnxruntime's CPU GroupQueryAttention needs a head size that is a multiple of 16, and the trained tiny base has
24, so it is refused up front (tested). The conversion itself is checked on a randomly initialised Llama with
head size 16 and the built-in tokenizer: fp32 must match transformers to max |dlogprob| < 1e-3 and top-1 1.0
(a numerical equivalence check, valid on random weights); int4 must load, generate and keep top-1 >= 0.8
(a loose floor: on random weights agreement says little about quality, so held-out exact match is not checked).
"""

import importlib.util
import json
import shutil

import pytest

from lifecycle.artifact import Artifact
from lifecycle.engine import SamplingParams, load_engine
from lifecycle.errors import UserError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime_genai") is None or importlib.util.find_spec("onnx") is None,
                                reason="onnxruntime-genai / onnx not installed (pip install -e '.[quant]')")
SETS = ["eval_items=0", "parity_prompts=8", "threads=1"]


@pytest.fixture(scope="session")
def head16_model(tmp_path_factory, base_artifact, torch_one_thread):
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("head16") / "model"
    cfg = json.loads((base_artifact.path / "config.json").read_text())
    cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16)
    torch_one_thread.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**cfg)).save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        shutil.copyfile(base_artifact.path / f, out / f)
    return out


@pytest.fixture(scope="session")
def onnx_artifacts(tmp_path_factory, head16_model):
    from quantize.driver import quantize

    root, cache = tmp_path_factory.mktemp("quant-onnx"), {}
    return {n: Artifact.load(quantize(head16_model, n, root / n, SETS, parent_cache=cache)) for n in ("onnx", "onnx-int4")}


def test_onnx_fp32_matches_transformers(onnx_artifacts):
    m = onnx_artifacts["onnx"].metrics
    assert m["top1_agreement"] == 1.0 and m["max_logprob_diff"] < 1e-3 and m["greedy_agreement"] == 1.0, m
    assert m["onnx_ops"]["GroupQueryAttention"] == 2 and m["chat_template"] is True


def test_onnx_int4_uses_matmulnbits(onnx_artifacts):
    m = onnx_artifacts["onnx-int4"].metrics
    assert m["onnx_ops"].get("MatMulNBits", 0) >= 8 and "MatMul" not in m["onnx_ops"], m
    assert m["top1_agreement"] >= 0.8 and m["ratio_to_parent"] > 2.5, m


def test_onnx_engine_generates_streams_scores(onnx_artifacts):
    art = onnx_artifacts["onnx"]
    engine = load_engine(art.path, threads=1)
    params = SamplingParams(max_tokens=6)
    [c] = engine.generate(["12+34="], params)
    assert c.completion_tokens >= 1
    assert "".join(ev.text for ev in engine.stream("12+34=", params)) == c.text
    [chat] = engine.generate([[{"role": "user", "content": "What is 2+3?"}]], params)
    assert chat.prompt_tokens > 5 and (art.path / "chat_template.jinja").is_file()
    [s] = engine.score([("12+34=", "46")])
    assert s.num_tokens >= 1 and s.logprob < 0
    [t] = engine.generate(["12+34="], SamplingParams(max_tokens=6, temperature=1.0, seed=3))
    [t2] = engine.generate(["12+34="], SamplingParams(max_tokens=6, temperature=1.0, seed=3))
    assert t.text == t2.text


def test_onnx_tamper_refused(onnx_artifacts, tmp_path):
    copy = tmp_path / "onnx"
    shutil.copytree(onnx_artifacts["onnx-int4"].path, copy)
    (copy / "genai_config.json").write_text("{}")
    with pytest.raises(UserError, match="sha256 mismatch"):
        load_engine(str(copy))


def test_onnx_refuses_head_size_24_up_front(base_artifact, tmp_path):
    from quantize.driver import quantize

    with pytest.raises(UserError, match="multiple of 16"):
        quantize(base_artifact.path, "onnx", tmp_path / "x", SETS)
    assert not (tmp_path / "x").exists()
