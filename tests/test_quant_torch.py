"""Torch weight-only formats (int8, fp8 via torchao; int4 via bitsandbytes NF4) on the trained tiny base.

Floors, measured on tiny-arith (0.66M params, 128/256-wide rows) with 40 held-out sums and 16 parity prompts
(measured values in brackets):
- int8 (per-row int8): top-1 >= 0.98, greedy agreement >= 0.95, KL < 0.01, raw exact match within 0.05 of the
  parent [top-1 0.994, greedy 1.0, KL 1.6e-4];
- fp8 (e4m3, 3 mantissa bits): top-1 >= 0.90, greedy >= 0.85, KL < 0.05, raw exact match within 0.10
  [0.971, 0.94, 3.5e-3];
- int4 (NF4, blocks of 64): top-1 >= 0.90, greedy >= 0.70, KL < 0.03, raw exact match within 0.10 [0.948, 0.81,
  9.1e-3, raw exact match 1.0 = parent]. bitsandbytes 0.50.2's CPU NF4 quantizer mis-quantizes rows that are not
  a multiple of 64; the built-in base's rows all are, so `check` records an empty `shape_check` (asserted).
  On the earlier 96-wide base the same format reached top-1 0.60 and raw exact match ~0.2.
"""

import importlib.util
import shutil

import pytest

from lifecycle.artifact import Artifact
from lifecycle.engine import SamplingParams, load_engine
from lifecycle.errors import UserError
from lifecycle.extras import install_hint

pytestmark = pytest.mark.integration

NEEDS = {"int8": "torchao", "fp8": "torchao", "int4": "bitsandbytes"}
FLOORS = {  # top1, greedy, max raw-EM drop, max KL
    "int8": (0.98, 0.95, 0.05, 0.01),
    "fp8": (0.90, 0.85, 0.10, 0.05),
    "int4": (0.90, 0.70, 0.10, 0.03),
}
SETS = ["eval_items=40", "parity_prompts=16", "threads=1"]


def _skip_unless(name):
    lib = NEEDS[name]
    if importlib.util.find_spec(lib) is None:
        pytest.skip(install_hint(lib))


@pytest.fixture(scope="session")
def torch_quant(tmp_path_factory, base_artifact, torch_one_thread):
    """Produce each torch format once per session (lazily, only the ones a test asks for)."""
    from quantize.driver import quantize

    root, made, cache = tmp_path_factory.mktemp("quant-torch"), {}, {}

    def get(name):
        if name not in made:
            made[name] = Artifact.load(quantize(base_artifact.path, name, root / name, SETS, parent_cache=cache))
        return made[name]

    return get


@pytest.mark.parametrize("name", ["int8", "fp8", "int4"])
def test_torch_format_parity(name, torch_quant, base_artifact):
    _skip_unless(name)
    art = torch_quant(name)
    m = art.metrics
    top1, greedy, em_drop, kl = FLOORS[name]
    assert art.format == name and art.parent["sha256"] == base_artifact.manifest_sha256
    assert m["top1_agreement"] >= top1, m
    assert m["greedy_agreement"] >= greedy, m
    assert m["mean_kl"] < kl, m
    assert m["raw_exact_match"] >= m["parent_raw_exact_match"] - em_drop, m
    assert m["parent_raw_exact_match"] >= 0.85, m  # the parent really adds, so agreement means something
    assert m["size_bytes"] < base_artifact.size_bytes() and m["ratio_to_parent"] > 1.5
    assert m["quantized_linear"] >= 28  # every attention and MLP projection
    assert m["chat_template"] is True
    if name == "fp8":
        assert "emulated on CPU" in m["compute"]
    if name == "int4":
        assert m["shape_check"] == {}, m  # every row a multiple of bitsandbytes' 64-wide NF4 blocks


@pytest.mark.parametrize("name", ["int8", "int4"])
def test_torch_format_engine(name, torch_quant):
    _skip_unless(name)
    art = torch_quant(name)
    engine = load_engine(art.path, threads=1)
    assert (art.path / "tokenizer.model").is_file() and engine.tok.chat_template
    [c] = engine.generate(["12+34="], SamplingParams(max_tokens=4, stop=["\n"]))
    streamed = "".join(ev.text for ev in engine.stream("12+34=", SamplingParams(max_tokens=4, stop=["\n"])))
    assert streamed == c.text and c.completion_tokens >= 1
    [chat] = engine.generate([[{"role": "user", "content": "What is 2+3?"}]], SamplingParams(max_tokens=8))
    assert chat.prompt_tokens > 5
    [s] = engine.score([("12+34=", c.text)])
    assert s.num_tokens >= 1 and s.is_greedy and s.logprob <= 0


def test_torch_format_tamper_refused(torch_quant, tmp_path):
    _skip_unless("int8")
    copy = tmp_path / "int8"
    shutil.copytree(torch_quant("int8").path, copy)
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00\x01\x02\x03\x04\x05\x06\x07")
    with pytest.raises(UserError, match="sha256 mismatch"):
        load_engine(str(copy))
