"""GPTQ 4-bit (GPTQModel, CPU kernel, group size 32, built-in calibration) on the trained tiny base.

Floors, on tiny-arith with 40 held-out sums and 16 parity prompts: top-1 >= 0.85, KL < 0.05, raw exact match
within 0.10 of the parent (measured: top-1 0.96, KL 4.3e-3, raw exact match 1.0 vs 1.0). auto-gptq is not tested: it is
abandoned upstream and fails to import on transformers 5; GPTQModel replaces it.
"""

import importlib.util
import shutil

import pytest

from lifecycle.artifact import Artifact
from lifecycle.engine import SamplingParams, load_engine
from lifecycle.errors import UserError
from lifecycle.extras import install_hint

pytestmark = [pytest.mark.integration, pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is None,
                                                         reason=install_hint("gptqmodel"))]


@pytest.fixture(scope="session")
def gptq_artifact(tmp_path_factory, base_artifact, torch_one_thread):
    from quantize.driver import quantize

    out = tmp_path_factory.mktemp("quant-gptq") / "gptq"
    return Artifact.load(quantize(base_artifact.path, "gptq", out, ["eval_items=40", "parity_prompts=16", "threads=1"]))


def test_gptq_parity(gptq_artifact, base_artifact):
    m = gptq_artifact.metrics
    assert gptq_artifact.parent["sha256"] == base_artifact.manifest_sha256
    assert m["top1_agreement"] >= 0.85 and m["mean_kl"] < 0.05, m
    assert m["raw_exact_match"] >= m["parent_raw_exact_match"] - 0.10, m
    assert m["bits"] == 4 and m["group_size"] == 32 and m["ratio_to_parent"] > 3.5
    assert (gptq_artifact.path / "quantize_config.json").is_file() and m["chat_template"] is True


def test_gptq_engine_and_tamper(gptq_artifact, tmp_path):
    engine = load_engine(gptq_artifact.path, threads=1)
    params = SamplingParams(max_tokens=4, stop=["\n"])
    [c] = engine.generate(["12+34="], params)
    assert c.completion_tokens >= 1
    assert "".join(ev.text for ev in engine.stream("12+34=", params)) == c.text
    copy = tmp_path / "gptq"
    shutil.copytree(gptq_artifact.path, copy)
    (copy / "quantize_config.json").write_text("{}")
    with pytest.raises(UserError, match="sha256 mismatch"):
        load_engine(str(copy))


def test_gptq_group_size_checked_up_front(base_artifact, tmp_path):
    from quantize.driver import quantize

    with pytest.raises(UserError, match="hidden_size 128 is not a multiple of group_size 96"):
        quantize(base_artifact.path, "gptq", tmp_path / "x", ["group_size=96"])  # 128 % 96 != 0
