"""QLoRA SFT: LoRA on a 4-bit NF4 base through bitsandbytes on CPU, or one clear error without it."""

import importlib.util

import pytest

from lifecycle.artifact import Artifact
from lifecycle.errors import UserError

pytestmark = pytest.mark.integration

HAS_BNB = importlib.util.find_spec("bitsandbytes") is not None


@pytest.mark.skipif(not HAS_BNB, reason="bitsandbytes not installed")
def test_qlora_sft_runs_and_merges(tmp_path, base_artifact, torch_one_thread):
    from lifecycle.train import merge, sft

    cfg = sft.SFTConfig(model=str(base_artifact.path), method="qlora", max_steps=2, batch_size=4, n_examples=16,
                        eval_items=4, threads=1)
    art = Artifact.load(sft.run(cfg, tmp_path / "qlora"))
    assert art.format == "adapter" and art.manifest["adapter_method"] == "qlora"
    assert "exact_match" in art.metrics
    merged = Artifact.load(merge.run(merge.MergeConfig(model=str(art.path), eval_items=0, threads=1), tmp_path / "m"))
    assert merged.format == "hf"


def test_qlora_refuses_an_adapter_base(tmp_path, sft_adapter):
    from lifecycle.train import sft

    cfg = sft.SFTConfig(model=str(sft_adapter.path), method="qlora", max_steps=1, threads=1)
    with pytest.raises(UserError, match="qlora quantizes a checkpoint|needs bitsandbytes"):
        sft.run(cfg, tmp_path / "q")
