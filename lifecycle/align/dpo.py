"""Direct Preference Optimization with TRL's DPOTrainer, as a LoRA on top of the SFT policy.

    lifecycle align --method dpo --model runs/sft --data builtin:pref-style --output runs/dpo

The SFT artifact (adapter or checkpoint) is loaded and merged in memory; DPO trains a fresh LoRA on it,
so the reference model is exactly the SFT policy (the same weights with the adapter disabled). The
default loss is sigmoid DPO plus an SFT term on the chosen answer, which keeps answers correct while the
style moves; plain sigmoid DPO at a high learning rate was seen to destroy correctness.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lifecycle.config import field
from lifecycle.errors import UserError


@dataclass
class DPOConfig:
    model: str = field("", help="the SFT policy: an adapter or hf artifact (also the DPO reference)")
    data: str = field("builtin:pref-style", help="pairs with prompt/chosen/rejected: builtin:pref-*, .jsonl or dataset artifact")
    output: str = field("", help="artifact directory to write (default: the local store)")
    loss_type: list[str] = field(["sigmoid", "sft"], help="TRL DPO loss terms, combined; e.g. sigmoid | ipo | sigmoid,sft")
    beta: float = field(0.1, help="strength of the pull toward the reference; higher = smaller moves")
    max_steps: int = field(150, help="optimizer steps")
    batch_size: int = field(16, help="pairs per step")
    learning_rate: float = field(1e-3, help="peak learning rate of the DPO LoRA")
    lora_r: int = field(16, help="LoRA rank")
    lora_alpha: int = field(32, help="LoRA scaling numerator")
    lora_dropout: float = field(0.0, help="dropout on the LoRA path")
    target_modules: str = field("all-linear", help="modules the LoRA wraps")
    max_length: int = field(128, help="tokens per prompt+answer")
    n_examples: int = field(1000, help="pairs drawn from a builtin: data source")
    eval_items: int = field(200, help="held-out sums evaluated after training (0 to skip)")
    seed: int = field(0, help="seed")
    threads: int = field(2, help="torch threads")
    trust_remote_code: bool = field(False, help="allow custom model code from the checkpoint")

    METHOD = "dpo"  # class attribute: the name recorded in the manifest

    def __post_init__(self) -> None:
        if not self.model:
            raise UserError("DPO needs --model: the SFT artifact to align (it is also the reference)")
        if self.beta <= 0:
            raise UserError(f"beta must be > 0, got {self.beta}")


def run(cfg: DPOConfig, out: Path) -> Path:
    import tempfile

    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    from lifecycle.artifact import write_artifact
    from lifecycle.config import to_dict
    from lifecycle.data.load import PREFERENCE_FIELDS, load_records
    from lifecycle.models import resolve, task_profile
    from lifecycle.train.common import (MetricsLog, base_ref, drop_printer, is_writer, load_causal_lm,
                                        progress_callback, save_tokenizer, setup_torch, stage_eval,
                                        trainer_common_args, writer_done)
    from lifecycle.train.sft import lora_config

    setup_torch(cfg.threads, cfg.seed)
    policy = resolve(cfg.model)
    model, tok = load_causal_lm(policy, trust_remote_code=cfg.trust_remote_code)
    records = load_records(cfg.data, PREFERENCE_FIELDS, n=cfg.n_examples, seed=cfg.seed)
    dataset = Dataset.from_list([{k: r[k] for k in PREFERENCE_FIELDS} for r in records])

    log = MetricsLog()
    metrics: dict = {}
    with tempfile.TemporaryDirectory() as work:
        args = TRLDPOConfig(**trainer_common_args(work, cfg), loss_type=cfg.loss_type, beta=cfg.beta,
                            max_length=cfg.max_length)
        trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=dataset, processing_class=tok,
                             peft_config=lora_config(cfg), callbacks=[progress_callback(log, "dpo")])
        drop_printer(trainer)
        result = trainer.train()
    last = {k: v for step in log.history for k, v in step.items() if k.startswith("rewards/")}
    metrics.update({
        "train_loss": result.training_loss,
        "train_wall_s": round(result.metrics["train_runtime"], 1),
        "pairs": len(records),
        "reward_accuracy": last.get("rewards/accuracies"),
        "reward_margin": last.get("rewards/margins"),
    })
    if not is_writer(trainer, metrics):
        return out
    metrics.update(stage_eval(trainer.model, tok, cfg.eval_items, task_profile(policy)))
    with write_artifact(out, format="adapter", stage="align", parent=policy, options={"method": cfg.METHOD, **to_dict(cfg)},
                        metrics=metrics, extra={"base": base_ref(policy), "adapter_method": "lora", "align_method": cfg.METHOD}) as tmp:
        trainer.model.save_pretrained(tmp)
        save_tokenizer(tok, tmp)
        log.write(tmp / "train_log.json", metrics)
    writer_done(trainer)
    return out
