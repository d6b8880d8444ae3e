"""Offline preference methods (IPO, SimPO, CPO, ORPO, KTO) run a few real steps and log what they promise."""

import json

import pytest

from lifecycle.artifact import Artifact
from lifecycle.errors import UserError

SMALL = dict(max_steps=2, batch_size=4, n_examples=16, eval_items=4, threads=1)
# method -> a key its trainer logs every step
LOGGED = {"ipo": "rewards/margins", "simpo": "rewards/margins", "cpo": "nll_loss", "orpo": "log_odds_ratio",
          "kto": "kl"}


def history_keys(art: Artifact) -> set:
    log = json.loads((art.path / "train_log.json").read_text())
    return {k for row in log["history"] for k in row}


@pytest.mark.unit
def test_registry_imports_every_method():
    import dataclasses

    from lifecycle.align.methods import METHODS, help_text, lookup

    for name in METHODS:
        cls, run = lookup(name)
        assert dataclasses.is_dataclass(cls) and callable(run)
        assert cls.METHOD == name
    assert "grpo" in help_text()
    with pytest.raises(UserError, match="PPO is not offered"):
        lookup("ppo")


@pytest.fixture(scope="module")
def kto_adapter(tmp_path_factory, sft_adapter):
    from lifecycle.align.preference import KTOConfig, run_kto

    out = tmp_path_factory.mktemp("kto") / "adapter"
    return Artifact.load(run_kto(KTOConfig(model=str(sft_adapter.path), **SMALL), out))


@pytest.mark.parametrize("method", ["ipo", "simpo", "cpo", "orpo"])
@pytest.mark.integration
def test_pair_method_runs_and_records(method, tmp_path, sft_adapter):
    from lifecycle.align.methods import lookup

    cls, run = lookup(method)
    art = Artifact.load(run(cls(model=str(sft_adapter.path), **SMALL), tmp_path / method))
    assert art.format == "adapter" and art.manifest["base"]["path"] == str(sft_adapter.path)
    assert art.created_by["options"]["method"] == method
    assert {"loss", LOGGED[method]} <= history_keys(art)
    for key in ("exact_match", "verbose_rate", "pref_rate_style", "before/exact_match", "before/pref_rate_style"):
        assert key in art.metrics


@pytest.mark.integration
def test_kto_runs_and_merges(kto_adapter, tmp_path, sft_adapter):
    from lifecycle.train import merge

    assert kto_adapter.created_by["options"]["method"] == "kto"
    assert {"loss", "kl"} <= history_keys(kto_adapter)
    merged = Artifact.load(merge.run(merge.MergeConfig(model=str(kto_adapter.path), eval_items=0, threads=1),
                                     tmp_path / "merged"))
    assert merged.format == "hf" and merged.metrics["merge_parity"]["logits_max_abs_diff"] <= 1e-3


@pytest.mark.integration
def test_kto_given_pairs_names_the_fields(tmp_path, sft_adapter):
    from lifecycle.align.preference import KTOConfig, run_kto

    cfg = KTOConfig(model=str(sft_adapter.path), data="builtin:pref-style", **SMALL)
    with pytest.raises(UserError, match=r"kto needs records with prompt, completion, label .*builtin:kto-style"):
        run_kto(cfg, tmp_path / "kto")
    assert not (tmp_path / "kto").exists()


@pytest.mark.integration
def test_pair_method_given_unpaired_names_the_fields(tmp_path, sft_adapter):
    from lifecycle.align.preference import ORPOConfig, run_orpo

    cfg = ORPOConfig(model=str(sft_adapter.path), data="builtin:kto-style", **SMALL)
    with pytest.raises(UserError, match="orpo needs records with prompt, chosen, rejected"):
        run_orpo(cfg, tmp_path / "orpo")


@pytest.mark.unit
def test_config_validation():
    from lifecycle.align.preference import KTOConfig

    with pytest.raises(UserError, match="needs --model"):
        KTOConfig()
    with pytest.raises(UserError, match="batch_size >= 2"):
        KTOConfig(model="x", batch_size=1)


@pytest.mark.unit
def test_builtin_unpaired_and_heldout_data():
    from lifecycle.data import synth
    from lifecycle.data.load import UNPAIRED_FIELDS, load_records

    recs = load_records("builtin:kto-style", UNPAIRED_FIELDS, n=20)
    assert {r["label"] for r in recs} == {True, False}
    assert all(synth.is_verbose(r["completion"][0]["content"]) != r["label"] for r in recs)
    held = load_records("builtin:pref-correctness-heldout", ("prompt", "chosen", "rejected"), n=20)
    for r in held:
        a, b = map(int, synth._INT.findall(r["prompt"][0]["content"]))
        assert synth.is_held_out(a, b) and int(r["chosen"][0]["content"]) == a + b
