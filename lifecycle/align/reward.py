"""Reward model: TRL's RewardTrainer on preference pairs, saved as a `reward` artifact that scores chats.

    lifecycle reward --model runs/sft --data builtin:pref-correctness --output runs/rm

The policy (an SFT adapter or checkpoint, merged in memory) gets a one-output score head
(`AutoModelForSequenceClassification`, num_labels=1) and is trained with the Bradley-Terry loss so that
chosen answers score above rejected ones. `method=full` updates every weight; `method=lora` trains a LoRA
plus the score head and merges it before saving, so the artifact is always a plain sequence-classification
checkpoint: `load_reward_model(art)` and `score(...)` use it, and GRPO/RLOO take it as a reward.
Pairwise accuracy is measured before and after training on pairs built from held-out sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lifecycle.config import field
from lifecycle.errors import UserError

METHODS = ("full", "lora")


@dataclass
class RewardConfig:
    model: str = field("", help="the model to start from: an SFT adapter or hf artifact (a score head is added)")
    data: str = field("builtin:pref-correctness", help="pairs with prompt/chosen/rejected: builtin:pref-*, .jsonl or dataset artifact")
    eval_data: str = field("", help="held-out pairs for pairwise accuracy (default: builtin:pref-<kind>-heldout for "
                                    "builtin data; for a file, its last 10% is held out and not trained on)")
    output: str = field("", help="artifact directory to write (default: the local store)")
    method: str = field("full", help="full | lora; lora is merged into the checkpoint before saving")
    max_steps: int = field(200, help="optimizer steps")
    batch_size: int = field(16, help="pairs per step")
    learning_rate: float = field(1e-3, help="peak learning rate")
    lora_r: int = field(16, help="LoRA rank (method=lora)")
    lora_alpha: int = field(32, help="LoRA scaling numerator (method=lora)")
    lora_dropout: float = field(0.0, help="dropout on the LoRA path (method=lora)")
    target_modules: str = field("all-linear", help="modules the LoRA wraps (method=lora)")
    max_length: int = field(128, help="tokens per prompt+answer")
    n_examples: int = field(2000, help="pairs drawn from a builtin: data source")
    eval_pairs: int = field(200, help="held-out pairs scored for pairwise accuracy (0 to skip)")
    seed: int = field(0, help="seed")
    threads: int = field(2, help="torch threads")
    trust_remote_code: bool = field(False, help="allow custom model code from the checkpoint")

    def __post_init__(self) -> None:
        if not self.model:
            raise UserError("reward needs --model: the checkpoint or SFT adapter to put a score head on")
        if self.method not in METHODS:
            raise UserError(f"reward method '{self.method}' is unknown; choose one of {', '.join(METHODS)}")

    def heldout_spec(self) -> str:
        """Where held-out pairs come from: eval_data, the builtin's held-out twin, or '' (split the data)."""
        if self.eval_data:
            return self.eval_data
        if self.data.startswith("builtin:pref-") and not self.data.endswith("-heldout"):
            return self.data + "-heldout"
        return ""


def score_head_model(causal):
    """A sequence-classification model (one score) sharing the causal model's trunk weights."""
    import copy

    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(causal.config)
    config.num_labels = 1
    config.architectures = None
    model = AutoModelForSequenceClassification.from_config(config, dtype=causal.dtype)
    missing, _ = model.load_state_dict(causal.state_dict(), strict=False)
    if any(not k.startswith("score.") for k in missing):
        raise UserError(f"cannot put a score head on this model: weights {missing[:3]} did not map")
    return model


def load_reward_model(art, trust_remote_code: bool = False):
    """(model, tokenizer) for a `reward` artifact, in eval mode."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if art.format != "reward":
        raise UserError(f"{art.path} has format '{art.format}'; a reward model is a 'reward' artifact "
                        "(make one with `lifecycle reward`)")
    tok = AutoTokenizer.from_pretrained(str(art.path), trust_remote_code=trust_remote_code)
    model = AutoModelForSequenceClassification.from_pretrained(str(art.path), trust_remote_code=trust_remote_code)
    return model.eval(), tok


def score(model, tok, prompts: list[list[dict]], completions: list[list[dict]], batch: int = 64) -> list[float]:
    """Reward of each (prompt, completion) chat, rendered with the chat template as in training."""
    import torch

    texts = [tok.apply_chat_template(p + c, tokenize=False) for p, c in zip(prompts, completions)]
    out: list[float] = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], add_special_tokens=False, padding=True, padding_side="right",
                      return_tensors="pt")
            out.extend(model(**enc).logits[:, 0].float().tolist())
    return out


def pairwise_accuracy(model, tok, records: list[dict]) -> dict:
    """Share of pairs whose chosen answer scores above the rejected one, and the mean margin."""
    was_training = model.training
    model.eval()
    prompts = [r["prompt"] for r in records]
    chosen = score(model, tok, prompts, [r["chosen"] for r in records])
    rejected = score(model, tok, prompts, [r["rejected"] for r in records])
    if was_training:
        model.train()
    margins = [c - r for c, r in zip(chosen, rejected)]
    return {"pairwise_accuracy": sum(m > 0 for m in margins) / len(margins),
            "mean_margin": sum(margins) / len(margins), "pairs": len(margins)}


def run(cfg: RewardConfig, out: Path) -> Path:
    import tempfile

    from datasets import Dataset
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    from lifecycle.align.common import last_logged, load_data, load_policy
    from lifecycle.artifact import write_artifact
    from lifecycle.config import to_dict
    from lifecycle.data.load import PREFERENCE_FIELDS
    from lifecycle.train.common import (
        MetricsLog,
        drop_printer,
        is_writer,
        progress_callback,
        save_tokenizer,
        trainer_common_args,
        writer_done,
    )

    records = load_data(cfg.data, PREFERENCE_FIELDS, "reward", "builtin:pref-correctness", cfg.n_examples, cfg.seed)
    heldout: list[dict] = []
    if cfg.eval_pairs and cfg.heldout_spec():
        heldout = load_data(cfg.heldout_spec(), PREFERENCE_FIELDS, "reward eval", "builtin:pref-correctness-heldout",
                            cfg.eval_pairs, cfg.seed + 1)
    elif cfg.eval_pairs:  # the user's own pairs: hold out the last tenth, never trained on
        k = min(cfg.eval_pairs, len(records) // 10)
        if k:
            records, heldout = records[:-k], records[-k:]
    policy, causal, tok = load_policy(cfg)
    if tok.pad_token is None:  # Llama-3 and Mistral have none; the score is read at the last non-pad token
        tok.pad_token = tok.eos_token
    model = score_head_model(causal)
    model.config.pad_token_id = tok.pad_token_id
    dataset = Dataset.from_list([{k: r[k] for k in PREFERENCE_FIELDS} for r in records])
    before = pairwise_accuracy(model, tok, heldout) if heldout else {}

    peft_config = None
    if cfg.method == "lora":
        from peft import LoraConfig

        targets = cfg.target_modules if cfg.target_modules == "all-linear" else [
            t.strip() for t in cfg.target_modules.split(",") if t.strip()]
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=targets, task_type="SEQ_CLS", modules_to_save=["score"])
    log = MetricsLog()
    with tempfile.TemporaryDirectory() as work:
        args = TRLRewardConfig(**trainer_common_args(work, cfg), max_length=cfg.max_length)
        trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                                peft_config=peft_config, callbacks=[progress_callback(log, f"reward ({cfg.method})")])
        drop_printer(trainer)
        result = trainer.train()
    processes: dict = {}
    if not is_writer(trainer, processes):  # under `accelerate launch` the main process measures and writes
        return out
    trained = trainer.model.merge_and_unload() if cfg.method == "lora" else trainer.model
    trained.eval()
    last = last_logged(log.history)
    metrics = {"train_loss": result.training_loss, "train_wall_s": round(result.metrics["train_runtime"], 1),
               "pairs": len(records), "train_accuracy": last.get("accuracy"), "train_margin": last.get("margin"),
               **processes}
    if heldout:
        after = pairwise_accuracy(trained, tok, heldout)
        metrics.update({"reward_accuracy": after["pairwise_accuracy"], "reward_margin": after["mean_margin"],
                        "before/reward_accuracy": before["pairwise_accuracy"],
                        "before/reward_margin": before["mean_margin"], "eval_pairs": after["pairs"],
                        "eval_data": cfg.heldout_spec() or f"last {len(heldout)} pairs of {cfg.data}"})
    with write_artifact(out, format="reward", stage="reward", parent=policy,
                        options={**to_dict(cfg), "method": f"reward-{cfg.method}"}, metrics=metrics) as tmp:
        trained.save_pretrained(tmp)
        save_tokenizer(tok, tmp)
        log.write(tmp / "train_log.json", metrics)
    writer_done(trainer)
    return out
