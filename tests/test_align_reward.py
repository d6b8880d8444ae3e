"""The reward model: trains on pairs, scores chosen above rejected on a separable set, loads for scoring."""

import pytest

from lifecycle.artifact import Artifact
from lifecycle.errors import UserError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def reward_artifact(tmp_path_factory, base_artifact, torch_one_thread):
    """Concise-vs-verbose pairs are trivially separable: a few full-update steps should learn them."""
    from lifecycle.align import reward

    out = tmp_path_factory.mktemp("rm") / "rm"
    cfg = reward.RewardConfig(model=str(base_artifact.path), data="builtin:pref-style", max_steps=25, batch_size=8,
                              n_examples=200, eval_pairs=32, learning_rate=3e-3, threads=1)
    return Artifact.load(reward.run(cfg, out))


def test_reward_separates_toy_pairs(reward_artifact):
    m = reward_artifact.metrics
    assert reward_artifact.format == "reward"
    assert reward_artifact.created_by["options"]["method"] == "reward-full"
    assert m["eval_data"] == "builtin:pref-style-heldout"
    assert m["reward_accuracy"] >= 0.9 and m["reward_margin"] > m["before/reward_margin"]


def test_reward_artifact_loads_and_scores(reward_artifact):
    from lifecycle.align.reward import load_reward_model, score

    model, tok = load_reward_model(reward_artifact)
    prompt = [{"role": "user", "content": "What is 12+34?"}]
    good, bad = score(model, tok, [prompt, prompt], [[{"role": "assistant", "content": "46"}],
                                                     [{"role": "assistant", "content": "Sure! The answer is 46."}]])
    assert good > bad


def test_reward_refuses_wrong_inputs(tmp_path, base_artifact, sft_adapter):
    from lifecycle.align import reward

    with pytest.raises(UserError, match="reward needs records with prompt, chosen, rejected"):
        reward.run(reward.RewardConfig(model=str(base_artifact.path), data="builtin:kto-style", threads=1),
                   tmp_path / "rm")
    with pytest.raises(UserError, match="'reward' artifact"):
        reward.load_reward_model(sft_adapter)
    with pytest.raises(UserError, match="full, lora"):
        reward.RewardConfig(model="x", method="qlora")


def test_reward_model_judges_eval_preferences(reward_artifact):
    """The eval layer's preference task can use a reward artifact as its judge."""
    from lifecycle.eval.preference import make_judge

    judge = make_judge(f"reward-model:{reward_artifact.path}")
    assert judge("What is 12+34?", "46", "Sure! The answer is 46.", "46") == "a"
    assert judge("What is 12+34?", "Sure! The answer is 46.", "46", "46") == "b"
    with pytest.raises(UserError, match="needs a path"):
        make_judge("reward-model")
