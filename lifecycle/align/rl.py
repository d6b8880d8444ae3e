"""RLHF policy optimisation with TRL's GRPO and RLOO: sample answers, score them, push up the better ones.

    lifecycle align --method grpo --model runs/sft --set reward=exact,concise -o runs/grpo
    lifecycle align --method rloo --model runs/sft --set reward=runs/rm -o runs/rloo

PPO is not offered: TRL 1.x removed PPOTrainer, and GRPO/RLOO need no value model (their baseline is the
mean reward of the other samples for the same prompt). The reward is a sum of terms, each either
programmatic or learned:
- `exact`: 1 if the last integer in the answer is the true sum (the prompt records carry `answer`);
- `concise`: 1 if the answer is the bare number (a format check);
- a `reward` artifact path or name (from `lifecycle reward`): its score of the chat.
The policy trains a LoRA; the artifact is an adapter on the given policy, mergeable with `lifecycle merge`.
Held-out mean reward (greedy answers to held-out sums) is measured before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lifecycle.align.common import PolicyOptions
from lifecycle.config import field
from lifecycle.errors import UserError

PROGRAMMATIC = ("exact", "concise")


@dataclass
class RLOptions(PolicyOptions):
    data: str = field("builtin:prompts", help="prompts (with 'answer' for the exact reward): builtin:prompts or .jsonl")
    reward: list[str] = field(["exact", "concise"], help="reward terms, summed: exact | concise | a reward artifact")
    num_generations: int = field(4, help="answers sampled per prompt; more = a better baseline, slower steps")
    max_completion_length: int = field(16, help="max new tokens per sampled answer")
    temperature: float = field(1.0, help="sampling temperature of the rollouts")
    batch_size: int = field(16, help="sampled answers per step (prompts per step x num_generations)")
    learning_rate: float = field(5e-4, help="peak learning rate of the LoRA")
    max_steps: int = field(60, help="optimizer steps")
    n_examples: int = field(2000, help="prompts drawn from a builtin: data source")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.reward:
            raise UserError("reward is empty; use exact, concise and/or a reward artifact path")
        if self.num_generations < 2:
            raise UserError("num_generations must be >= 2: the baseline is the other samples of the same prompt")
        if self.batch_size % self.num_generations:
            raise UserError(f"batch_size ({self.batch_size}) must be a multiple of num_generations "
                            f"({self.num_generations})")


@dataclass
class GRPOConfig(RLOptions):
    METHOD = "grpo"
    beta: float = field(0.0, help="KL penalty toward the reference (0 = none, TRL's default; no reference pass)")


@dataclass
class RLOOConfig(RLOptions):
    METHOD = "rloo"
    beta: float = field(0.05, help="KL penalty toward the reference folded into the reward")


def _text(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else str(completion)


def exact(prompts, completions, answer=None, **kw) -> list[float]:
    """1.0 when the answer's last integer equals the true sum."""
    from lifecycle.data.synth import extract_answer

    if answer is None:
        raise UserError("the 'exact' reward needs an 'answer' field in every prompt record")
    return [float(extract_answer(_text(c)) == int(a)) for c, a in zip(completions, answer)]


def concise(prompts, completions, **kw) -> list[float]:
    """1.0 when the answer is the bare number."""
    from lifecycle.data.synth import is_verbose

    return [float(not is_verbose(_text(c))) for c in completions]


def learned_reward(spec: str, trust_remote_code: bool = False):
    """A reward function backed by a `reward` artifact."""
    from lifecycle.align.reward import load_reward_model, score
    from lifecycle.models import resolve

    model, tok = load_reward_model(resolve(spec), trust_remote_code)

    def reward_model(prompts, completions, **kw) -> list[float]:
        return score(model, tok, prompts, [c if isinstance(c, list) else [{"role": "assistant", "content": c}]
                                           for c in completions])

    return reward_model


def reward_functions(cfg: RLOptions) -> list:
    return [{"exact": exact, "concise": concise}[r] if r in PROGRAMMATIC else learned_reward(r, cfg.trust_remote_code)
            for r in cfg.reward]


def heldout_reward(model, tok, funcs: list, n: int, max_tokens: int = 24) -> dict:
    """Mean summed reward of greedy answers to held-out sums (what GRPO/RLOO should raise)."""
    from lifecycle.data.synth import prompt_records
    from lifecycle.engine import SamplingParams
    from lifecycle.engines.hf import HFEngine

    items = prompt_records(n, seed=4321, held_out=True)
    prompts = [it["prompt"] for it in items]
    outs = HFEngine(model, tok).generate(prompts, SamplingParams(max_tokens=max_tokens, temperature=0.0))
    completions = [[{"role": "assistant", "content": o.text}] for o in outs]
    answers = [it["answer"] for it in items]
    per = {f.__name__: f(prompts, completions, answer=answers) for f in funcs}
    total = [sum(vals) for vals in zip(*per.values())]
    return {"mean_reward": sum(total) / n, **{f"mean_reward/{k}": sum(v) / n for k, v in per.items()}}


def _train(cfg: RLOptions, out: Path, trainer_cls, config_cls) -> Path:
    from datasets import Dataset

    from lifecycle.align.common import (
        last_logged,
        load_data,
        load_policy,
        train_and_write,
    )
    from lifecycle.data.load import PROMPT_FIELDS
    from lifecycle.train.common import progress_callback, trainer_common_args
    from lifecycle.train.sft import lora_config

    records = load_data(cfg.data, PROMPT_FIELDS, cfg.METHOD, "builtin:prompts", cfg.n_examples, cfg.seed)
    if "exact" in cfg.reward and any("answer" not in r for r in records):
        raise UserError(f"{cfg.data}: the 'exact' reward needs prompt records with an 'answer' field "
                        "(e.g. --data builtin:prompts), or drop it: --set reward=concise")
    policy, model, tok = load_policy(cfg)
    keep = [k for k in ("prompt", "answer") if k in records[0]]
    dataset = Dataset.from_list([{k: r[k] for k in keep} for r in records])
    funcs = reward_functions(cfg)
    from lifecycle.models import task_profile

    measure = bool(cfg.eval_items) and task_profile(policy) == "arith"  # held-out sums: the built-in lineage only
    before = heldout_reward(model, tok, funcs, cfg.eval_items) if measure else {}

    def make(work, log):
        args = config_cls(**trainer_common_args(work, cfg), num_generations=cfg.num_generations,
                          max_completion_length=cfg.max_completion_length, temperature=cfg.temperature,
                          beta=cfg.beta)
        return trainer_cls(model=model, reward_funcs=funcs, args=args, train_dataset=dataset, processing_class=tok,
                           peft_config=lora_config(cfg), callbacks=[progress_callback(log, cfg.METHOD)])

    def extra(trainer, log):
        last = last_logged(log.history)
        first = next((row for row in log.history if "reward" in row), {})
        metrics = {"train_reward_first": first.get("reward"), "train_reward_last": last.get("reward"),
                   "train_completion_length": last.get("completions/mean_length")}
        if measure:
            after = heldout_reward(trainer.model, tok, funcs, cfg.eval_items)
            metrics.update({**after, **{f"before/{k}": v for k, v in before.items()}})
        return metrics

    return train_and_write(cfg, out, policy, model, tok, make, extra)


def run_grpo(cfg: GRPOConfig, out: Path) -> Path:
    from trl import GRPOConfig as TRLGRPOConfig
    from trl import GRPOTrainer

    return _train(cfg, out, GRPOTrainer, TRLGRPOConfig)


def run_rloo(cfg: RLOOConfig, out: Path) -> Path:
    from trl import RLOOConfig as TRLRLOOConfig
    from trl import RLOOTrainer

    return _train(cfg, out, RLOOTrainer, TRLRLOOConfig)
