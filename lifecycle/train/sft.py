"""Supervised fine-tuning with TRL's SFTTrainer: LoRA (default), DoRA, QLoRA or full, assistant-only loss.

    lifecycle sft --model tiny-arith --data builtin:sft --output runs/sft
    lifecycle sft --model runs/base --data chats.jsonl --set method=full --set max_steps=500
    lifecycle sft --model tiny-arith --method qlora --output runs/sft-qlora

LoRA, DoRA and QLoRA write an `adapter` artifact that records its base; `full` writes an `hf` checkpoint.
QLoRA loads the base in 4-bit NF4 through bitsandbytes (>= 0.50 runs NF4 on CPU) and trains a float LoRA on
it; the adapter merges into the full-precision base like any other (the usual QLoRA practice).
The loss covers assistant tokens only, for any chat template the checkpoint carries (stock or custom):
`lifecycle.train.chat_masks` tokenizes each chat and marks its assistant turns, and TRL trains on that mask.
The base keeps its own dtype (`dtype=auto`: a bf16 checkpoint trains a float32 LoRA on a bf16 base).
Under `accelerate launch --num_processes N` the Trainer runs DDP (gloo on CPU, NCCL or FSDP on GPUs);
`batch_size` stays the global batch and the main process alone evaluates and writes the artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lifecycle.config import field
from lifecycle.errors import UserError

METHODS = ("lora", "dora", "qlora", "full")


@dataclass
class SFTConfig:
    model: str = field("tiny-arith", help="base model: a built-in name, a store name or an artifact path")
    data: str = field("builtin:sft", help="chat records with 'messages': builtin:sft, a .jsonl, or a dataset artifact")
    output: str = field("", help="artifact directory to write (default: the local store)")
    method: str = field("lora", help="lora | dora | qlora | full; qlora = LoRA on a 4-bit NF4 base (bitsandbytes); full writes a checkpoint")
    max_steps: int = field(300, help="optimizer steps")
    batch_size: int = field(16, help="sequences per step")
    learning_rate: float = field(2e-3, help="peak learning rate; LoRA tolerates higher rates than full")
    lora_r: int = field(16, help="LoRA rank")
    lora_alpha: int = field(32, help="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = field(0.0, help="dropout on the LoRA path")
    target_modules: str = field("all-linear", help="modules LoRA wraps: 'all-linear' or comma-separated names")
    max_length: int = field(128, help="tokens per example; longer chats are truncated")
    assistant_only_loss: bool = field(True, help="train on assistant tokens only (any chat template); false trains on the whole chat")
    dtype: str = field("auto", help="weights dtype while training: auto keeps the checkpoint's (bf16 stays bf16), or float32 | bfloat16 | float16")
    n_examples: int = field(2000, help="examples drawn from a builtin: data source")
    eval_items: int = field(200, help="held-out sums evaluated after training (built-in arithmetic models only; 0 to skip)")
    seed: int = field(0, help="seed for data order, init and sampling")
    threads: int = field(2, help="torch threads")
    trust_remote_code: bool = field(False, help="allow custom model code from the checkpoint (off: safer)")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"sft method '{self.method}' is unknown; choose one of {', '.join(METHODS)}")
        if self.max_steps < 1:
            raise UserError("max_steps must be >= 1")
        from lifecycle.loading import DTYPES

        if self.dtype not in DTYPES:
            raise UserError(f"dtype '{self.dtype}' is unknown; use one of {', '.join(DTYPES)}")


def lora_config(cfg, use_dora: bool = False):
    from peft import LoraConfig

    targets = cfg.target_modules if cfg.target_modules == "all-linear" else [
        t.strip() for t in cfg.target_modules.split(",") if t.strip()]
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, use_dora=use_dora, task_type="CAUSAL_LM")


def load_qlora_base(base, trust_remote_code: bool = False):
    """(model, tokenizer): an `hf` checkpoint loaded in 4-bit NF4 and prepared for k-bit LoRA training."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        from lifecycle.extras import install_hint

        raise UserError(f"sft method qlora needs bitsandbytes>=0.50.2 (NF4 on CPU): {install_hint('bitsandbytes')}; "
                        "or use --method lora")
    if base.format != "hf":
        raise UserError(f"qlora quantizes a checkpoint, but {base.path} is a '{base.format}' artifact; "
                        "merge it first (lifecycle merge) or use --method lora")
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
                             bnb_4bit_use_double_quant=True)
    model = AutoModelForCausalLM.from_pretrained(str(base.path), quantization_config=bnb, device_map="cpu",
                                                 dtype=torch.float32, trust_remote_code=trust_remote_code)
    import bitsandbytes as bnb_lib

    for module in model.modules():
        # bnb's CPU inference fast path repacks weights in 64-wide blocks of in_features and fails on
        # other widths (tiny-arith's are all multiples of 64; other models may not be); keep those layers on
        # the generic NF4 path.
        if isinstance(module, bnb_lib.nn.Linear4bit) and module.in_features % 64:
            module.support_avx512bf16_for_cpu = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    tok = AutoTokenizer.from_pretrained(str(base.path), trust_remote_code=trust_remote_code)
    return model, tok


def run(cfg: SFTConfig, out: Path) -> Path:
    import tempfile

    from lifecycle.models import resolve, task_profile

    base = resolve(cfg.model)  # a missing model is a one-line error before the heavy imports

    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from lifecycle.artifact import write_artifact
    from lifecycle.config import to_dict
    from lifecycle.data.load import SFT_FIELDS, load_records
    from lifecycle.train.chat_masks import tokenize_chats
    from lifecycle.train.common import (MetricsLog, base_ref, drop_printer, is_writer, load_causal_lm,
                                        progress_callback, save_tokenizer, setup_torch, stage_eval,
                                        trainer_common_args, writer_done)

    setup_torch(cfg.threads, cfg.seed)
    if cfg.method == "qlora":
        model, tok = load_qlora_base(base, cfg.trust_remote_code)
    else:
        model, tok = load_causal_lm(base, trust_remote_code=cfg.trust_remote_code, dtype=cfg.dtype)
    records = load_records(cfg.data, SFT_FIELDS, n=cfg.n_examples, seed=cfg.seed)
    rows, notes = tokenize_chats(tok, records, cfg.max_length)
    if not cfg.assistant_only_loss:
        rows = [{"input_ids": r["input_ids"]} for r in rows]
    dataset = Dataset.from_list(rows)

    log = MetricsLog()
    metrics: dict = {}
    is_adapter = cfg.method != "full"
    with tempfile.TemporaryDirectory() as work:
        # the rows are tokenized and masked already: TRL only truncates, builds labels from the mask and pads
        args = TRLSFTConfig(**trainer_common_args(work, cfg), max_length=cfg.max_length,
                            assistant_only_loss=False, packing=False,
                            ddp_find_unused_parameters=False)  # LoRA/full use every trainable weight
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                             peft_config=lora_config(cfg, cfg.method == "dora") if is_adapter else None,
                             callbacks=[progress_callback(log, f"sft ({cfg.method})")])
        drop_printer(trainer)
        result = trainer.train()
    metrics.update({"train_loss": result.training_loss, "train_wall_s": round(result.metrics["train_runtime"], 1),
                    "examples": len(rows), "examples_notes": dict(notes)})
    if not is_writer(trainer, metrics):  # DDP keeps every replica equal: the main process writes the artifact
        return out
    metrics.update(stage_eval(trainer.model, tok, cfg.eval_items, task_profile(base)))

    fmt = "adapter" if is_adapter else "hf"
    extra = {"base": base_ref(base), "adapter_method": cfg.method} if is_adapter else None
    with write_artifact(out, format=fmt, stage="sft", parent=base, options=to_dict(cfg), metrics=metrics,
                        extra=extra) as tmp:
        trainer.model.save_pretrained(tmp)
        save_tokenizer(tok, tmp)
        log.write(tmp / "train_log.json", metrics)
    writer_done(trainer)
    return out
