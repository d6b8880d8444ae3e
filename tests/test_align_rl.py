"""GRPO and RLOO run a few real steps with programmatic and learned rewards and log reward figures."""

import json

import pytest

from lifecycle.artifact import Artifact
from lifecycle.errors import UserError

SMALL = dict(max_steps=2, batch_size=4, num_generations=2, n_examples=16, eval_items=4, max_completion_length=8,
             threads=1)


def history_keys(art: Artifact) -> set:
    log = json.loads((art.path / "train_log.json").read_text())
    return {k for row in log["history"] for k in row}


@pytest.mark.unit
def test_programmatic_rewards():
    from lifecycle.align.rl import concise, exact

    comps = [[{"role": "assistant", "content": "46"}], [{"role": "assistant", "content": "Sure! The answer is 45."}]]
    assert exact(None, comps, answer=[46, 45]) == [1.0, 1.0]
    assert exact(None, comps, answer=[46, 46]) == [1.0, 0.0]
    assert concise(None, comps) == [1.0, 0.0]


@pytest.mark.parametrize("method", ["grpo", "rloo"])
@pytest.mark.integration
def test_rl_method_runs_and_records(method, tmp_path, sft_adapter):
    from lifecycle.align.methods import lookup

    cls, run = lookup(method)
    art = Artifact.load(run(cls(model=str(sft_adapter.path), **SMALL), tmp_path / method))
    assert art.format == "adapter" and art.created_by["options"]["method"] == method
    assert {"loss", "reward", "rewards/exact/mean", "rewards/concise/mean"} <= history_keys(art)
    for key in ("mean_reward", "before/mean_reward", "mean_reward/exact", "exact_match", "before/exact_match"):
        assert key in art.metrics


@pytest.mark.integration
def test_grpo_with_learned_reward(tmp_path, sft_adapter, base_artifact):
    from lifecycle.align import reward
    from lifecycle.align.rl import GRPOConfig, run_grpo

    rm = reward.RewardConfig(model=str(base_artifact.path), data="builtin:pref-style", max_steps=1, batch_size=4,
                             n_examples=8, eval_pairs=0, threads=1)
    reward_artifact = Artifact.load(reward.run(rm, tmp_path / "rm"))
    cfg = GRPOConfig(model=str(sft_adapter.path), reward=[str(reward_artifact.path)], **{**SMALL, "max_steps": 1})
    art = Artifact.load(run_grpo(cfg, tmp_path / "grpo-rm"))
    assert "rewards/reward_model/mean" in history_keys(art)
    assert "mean_reward/reward_model" in art.metrics


@pytest.mark.integration
def test_rl_wrong_data_and_options(tmp_path, sft_adapter):
    from lifecycle.align.rl import GRPOConfig, run_grpo

    with pytest.raises(UserError, match="'answer' field"):
        run_grpo(GRPOConfig(model=str(sft_adapter.path), data="builtin:pref-style", **SMALL), tmp_path / "g")
    with pytest.raises(UserError, match="multiple of num_generations"):
        GRPOConfig(model="x", batch_size=5, num_generations=2)
    with pytest.raises(UserError, match="'reward' artifact"):
        run_grpo(GRPOConfig(model=str(sft_adapter.path), reward=[str(sft_adapter.path)], **SMALL), tmp_path / "g")
