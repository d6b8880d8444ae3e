"""The training stages accept what `lifecycle data` writes: SFT on a prepared chat set, DPO on prepared and on
human-labelled preference pairs (one optimizer step each; slow tier)."""

import csv
from pathlib import Path

import pytest

from lifecycle.artifact import Artifact
from lifecycle.data import label
from lifecycle.data.prepare import PrepareConfig, run

pytestmark = pytest.mark.integration

FIX = Path(__file__).parent / "fixtures" / "data"


def _prepared(tmp_path, fixture):
    cfg = PrepareConfig(inputs=[str(FIX / fixture)], validation_fraction=0, test_fraction=0, save_hf=False)
    return run(cfg, tmp_path / Path(fixture).stem)


def test_sft_trains_on_a_prepared_dataset(tmp_path, base_artifact, torch_one_thread):
    from lifecycle.train import sft

    data = _prepared(tmp_path, "alpaca.jsonl")
    cfg = sft.SFTConfig(model=str(base_artifact.path), data=str(data), max_steps=1, batch_size=4, eval_items=0,
                        threads=1)
    art = Artifact.load(sft.run(cfg, tmp_path / "sft"))
    assert art.metrics["examples"] == 7


def test_dpo_trains_on_prepared_and_human_pairs(tmp_path, sft_adapter, torch_one_thread):
    from lifecycle.align import dpo

    prepared = _prepared(tmp_path, "preference.jsonl")
    sheet = tmp_path / "pairs.csv"
    rows = [{"id": "h1", "prompt": "What is 2+3?", "response_a": "5", "response_b": "It is 5.", "context": "",
             "preference": "a", "note": ""},
            {"id": "h2", "prompt": "What is 4+4?", "response_a": "9", "response_b": "8", "context": "",
             "preference": "b", "note": ""}]
    with open(sheet, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    human = tmp_path / "human"
    label.write_import(sheet, label.get_schema("preference"), human)
    for data, pairs in ((prepared, 3), (human, 2)):
        cfg = dpo.DPOConfig(model=str(sft_adapter.path), data=str(data), max_steps=1, batch_size=2, eval_items=0,
                            threads=1)
        art = Artifact.load(dpo.run(cfg, tmp_path / f"dpo-{data.name}"))
        assert art.metrics["pairs"] == pairs
