"""SFT, DPO and merge run a few real steps on the built-in model and log what they promise."""

import json

import pytest

from lifecycle.artifact import Artifact
from lifecycle.errors import UserError

pytestmark = pytest.mark.integration


def _history_keys(art: Artifact) -> set:
    log = json.loads((art.path / "train_log.json").read_text())
    return {k for row in log["history"] for k in row}


def test_sft_adapter_artifact(sft_adapter, base_artifact):
    assert sft_adapter.format == "adapter"
    assert sft_adapter.manifest["base"]["sha256"] == base_artifact.manifest_sha256
    assert {"adapter_config.json", "adapter_model.safetensors", "train_log.json"} <= set(sft_adapter.files)
    assert "loss" in _history_keys(sft_adapter)
    for key in ("train_loss", "exact_match", "verbose_rate"):
        assert key in sft_adapter.metrics


def test_adapter_loads_as_engine(sft_adapter):
    from lifecycle.engine import SamplingParams, load_engine

    engine = load_engine(sft_adapter)
    [out] = engine.generate([[{"role": "user", "content": "What is 3+4?"}]], SamplingParams(max_tokens=6))
    assert out.completion_tokens >= 1


@pytest.fixture(scope="module")
def dpo_adapter(tmp_path_factory, sft_adapter):
    from lifecycle.align import dpo

    out = tmp_path_factory.mktemp("dpo") / "adapter"
    cfg = dpo.DPOConfig(model=str(sft_adapter.path), max_steps=4, batch_size=4, n_examples=32, eval_items=10,
                        threads=1)
    return Artifact.load(dpo.run(cfg, out))


def test_dpo_logs_reward_accuracy_and_margins(dpo_adapter, sft_adapter):
    assert dpo_adapter.format == "adapter"
    assert dpo_adapter.manifest["base"]["path"] == str(sft_adapter.path)
    keys = _history_keys(dpo_adapter)
    assert {"loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"} <= keys
    assert dpo_adapter.metrics["reward_accuracy"] is not None
    assert dpo_adapter.created_by["options"]["method"] == "dpo"


def test_merge_parity_and_tied_embeddings(tmp_path, dpo_adapter, torch_one_thread):
    from lifecycle.train import merge
    from lifecycle.train.common import load_causal_lm

    out = merge.run(merge.MergeConfig(model=str(dpo_adapter.path), eval_items=0, threads=1), tmp_path / "m")
    merged = Artifact.load(out)
    parity = merged.metrics["merge_parity"]
    assert merged.format == "hf" and parity["logits_max_abs_diff"] <= 1e-3
    assert parity["embeddings"] == "tied"
    assert "model.safetensors" in merged.files and "tokenizer.model" in merged.files
    model, tok = load_causal_lm(merged)
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()


def test_merge_over_tolerance_is_refused(tmp_path, sft_adapter):
    from lifecycle.train import merge

    with pytest.raises(UserError, match="merge refused"):
        merge.run(merge.MergeConfig(model=str(sft_adapter.path), tolerance=1e-12, eval_items=0, threads=1),
                  tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_stage_refuses_wrong_inputs(tmp_path, base_artifact):
    from lifecycle.data.load import PREFERENCE_FIELDS, load_records
    from lifecycle.train import merge, sft

    with pytest.raises(UserError, match="merge takes an 'adapter'"):
        merge.merge_adapter(base_artifact)
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"prompt": "hi", "chosen": "a"}\n')
    with pytest.raises(UserError, match="record 1 lacks field"):
        load_records(str(bad), PREFERENCE_FIELDS)
    with pytest.raises(UserError, match="sft method 'qlora2'"):
        sft.SFTConfig(method="qlora2")


def test_plain_hf_checkpoint_is_accepted(tmp_path, base_artifact, torch_one_thread):
    """A user's own Hugging Face folder (no manifest) trains, and its adapter checks it did not change."""
    from transformers import AutoModelForCausalLM

    from lifecycle.train import sft
    from lifecycle.train.common import adapter_base, load_causal_lm, save_tokenizer

    model, tok = load_causal_lm(base_artifact)
    ckpt = tmp_path / "my-checkpoint"
    model.save_pretrained(ckpt)
    save_tokenizer(tok, ckpt)
    assert not (ckpt / "manifest.json").exists()
    cfg = sft.SFTConfig(model=str(ckpt), max_steps=1, batch_size=2, n_examples=4, eval_items=0, threads=1,
                        method="full")
    full = Artifact.load(sft.run(cfg, tmp_path / "full"))
    assert full.format == "hf" and full.parent["path"] == str(ckpt)
    AutoModelForCausalLM.from_pretrained(str(full.path))

    cfg.method, cfg.output = "lora", ""
    adapter = Artifact.load(sft.run(cfg, tmp_path / "lora"))
    assert adapter_base(adapter).path == ckpt
    (ckpt / "config.json").write_text((ckpt / "config.json").read_text().replace("}", ', "note": 1}', 1))
    with pytest.raises(UserError, match="missing or changed"):
        adapter_base(adapter)


def test_dora_adapter_trains_and_merges(tmp_path, base_artifact, torch_one_thread):
    from lifecycle.train import merge, sft

    cfg = sft.SFTConfig(model=str(base_artifact.path), method="dora", max_steps=2, batch_size=2, n_examples=8,
                        eval_items=0, threads=1)
    adapter = Artifact.load(sft.run(cfg, tmp_path / "dora"))
    assert adapter.manifest["adapter_method"] == "dora"
    assert json.loads((adapter.path / "adapter_config.json").read_text())["use_dora"] is True
    merged = Artifact.load(merge.run(merge.MergeConfig(model=str(adapter.path), eval_items=0, threads=1),
                                     tmp_path / "merged"))
    assert merged.metrics["merge_parity"]["logits_max_abs_diff"] <= 1e-3
