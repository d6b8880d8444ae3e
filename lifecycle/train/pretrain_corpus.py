"""Pretraining on a user's corpus: continued pretraining of any causal LM, or a preset shape from scratch.

    lifecycle pretrain --model tiny-arith --data examples/corpus/subtraction.jsonl -o runs/cpt
    lifecycle pretrain --preset micro --data corpus.txt -o runs/scratch

The corpus streams from disk (`lifecycle.train.corpus`) into the transformers Trainer as packed blocks of
`seq_len` tokens, never padded. Every `heldout_every`-th document is held out, and perplexity on its first
`eval_blocks` blocks is measured before and after training. The schedule is the usual continued-pretraining
one: linear warmup over 5% of the steps, cosine decay to 10% of the peak. Checkpoints go to a folder beside
the output (`.NAME.pretrain-checkpoints`) every `save_steps`; rerunning the same command after a kill resumes
from the last one, and the folder is removed once the artifact is written.
From scratch, a SentencePiece tokenizer is first trained on the corpus with the built-in recipe
(`lifecycle.train.tokenizer`), so it converts to GGUF and ONNX exactly as the built-in one does.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from lifecycle.errors import UserError

RECIPE_LR = {"scratch": 2e-3, "full": 2e-4, "lora": 1e-3}
# options that do not change what is trained: a checkpoint made under other values is still resumable
RESUME_IGNORES = ("output", "threads", "save_steps")


def checkpoint_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.pretrain-checkpoints"


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _prepare_checkpoints(cfg, folder: Path):
    """The last checkpoint to resume from (None to start fresh); stale checkpoints of other options go."""
    from transformers.trainer_utils import get_last_checkpoint

    from lifecycle.atomic import write_json_atomic
    from lifecycle.config import to_dict

    options = {k: v for k, v in to_dict(cfg).items() if k not in RESUME_IGNORES}
    record = folder / "options.json"
    if folder.is_dir():
        try:
            same = json.loads(record.read_text()) == options
        except (OSError, ValueError):
            same = False
        if not same:
            print(f"pretrain: {folder} holds checkpoints of other options; starting fresh")
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, options)
    last = get_last_checkpoint(str(folder))
    if last:
        print(f"pretrain: resuming from {Path(last).name}")
    return last


def _scratch_tokenizer(cfg, train_docs, folder: Path):
    """Train (or, on resume, reload) the corpus tokenizer with the built-in SentencePiece recipe."""
    from lifecycle.train import corpus
    from lifecycle.train.tokenizer import load_tokenizer, train_tokenizer

    tok_dir = folder / "tokenizer"
    if not (tok_dir / "tokenizer_config.json").is_file():
        lines = corpus.tokenizer_lines(train_docs, cfg.tokenizer_lines)
        staging = folder / "tokenizer.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            train_tokenizer(staging, lines, cfg.vocab_size, hard_vocab_limit=False)
        except RuntimeError as exc:  # SentencePiece's own message, e.g. a vocabulary larger than the corpus allows
            raise UserError(f"tokenizer training failed: {str(exc).strip().splitlines()[-1]}; "
                            "adjust --set vocab_size (byte fallback alone needs over 256) or use a larger corpus") from None
        staging.rename(tok_dir)
    return load_tokenizer(tok_dir)


def _scratch_model(cfg, tok):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from lifecycle.train.presets import PRESETS

    config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, **PRESETS[cfg.preset])
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    return model


def run_corpus(cfg, out: Path) -> Path:
    """Continued pretraining (cfg.model set) or from scratch (cfg.preset) on cfg.data; returns `out`."""
    from lifecycle.models import resolve
    from lifecycle.train import corpus

    base = resolve(cfg.model) if cfg.model else None  # a missing model or corpus is one line, before heavy imports
    docs = corpus.documents(cfg.data, cfg.text_field, cfg.text_unit)

    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, default_data_collator

    from lifecycle.artifact import write_artifact
    from lifecycle.config import to_dict
    from lifecycle.train.common import (MetricsLog, base_ref, drop_printer, is_writer, load_causal_lm,
                                        progress_callback, save_tokenizer, setup_torch, trainer_common_args,
                                        writer_done)

    setup_torch(cfg.threads, cfg.seed)
    folder = checkpoint_dir(out)
    last = _prepare_checkpoints(cfg, folder)
    train_docs, heldout_docs = corpus.split(docs, cfg.heldout_every)
    if base is not None:
        model, tok = load_causal_lm(base, trust_remote_code=cfg.trust_remote_code, dtype=cfg.dtype)
        recipe = cfg.method
    else:
        tok = _scratch_tokenizer(cfg, train_docs, folder)
        model = _scratch_model(cfg, tok)
        recipe = "scratch"
    if cfg.method == "lora":
        from peft import get_peft_model

        from lifecycle.train.sft import lora_config

        model = get_peft_model(model, lora_config(cfg))

    eval_rows = corpus.take_blocks(corpus.pack(heldout_docs, tok, cfg.seq_len), cfg.eval_blocks)
    if not eval_rows:
        raise UserError(f"corpus {cfg.data} is too small to hold out one block of {cfg.seq_len} tokens from every "
                        f"{cfg.heldout_every}-th document; lower --set seq_len or heldout_every, or add text")
    train_blocks = corpus.pack(train_docs.shuffle(seed=cfg.seed, buffer_size=cfg.shuffle_buffer), tok, cfg.seq_len)
    if not corpus.take_blocks(train_blocks, 1):
        raise UserError(f"corpus {cfg.data} has no training block of {cfg.seq_len} tokens; lower --set seq_len")

    lr = cfg.learning_rate or RECIPE_LR[recipe]
    log = MetricsLog()
    # the stages' shared arguments (CPU alone, DDP under `accelerate launch`, no loggers), with the
    # continued-pretraining recipe on top: AdamW b2 0.95, cosine to 10% of the peak, step checkpoints
    args = TrainingArguments(**{
        **trainer_common_args(str(folder), cfg), "learning_rate": lr, "weight_decay": cfg.weight_decay,
        "per_device_eval_batch_size": cfg.batch_size, "adam_beta2": 0.95, "max_grad_norm": 1.0,
        "lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
        "save_strategy": "steps", "save_steps": cfg.save_steps, "save_total_limit": 1,
        "remove_unused_columns": False})
    trainer = Trainer(model=model, args=args, train_dataset=train_blocks, data_collator=default_data_collator,
                      callbacks=[progress_callback(log, f"pretrain ({recipe})")])
    drop_printer(trainer)
    eval_set = Dataset.from_list(eval_rows)

    def perplexity() -> float:
        return round(math.exp(min(trainer.evaluate(eval_dataset=eval_set)["eval_loss"], 50.0)), 4)

    before = perplexity()
    result = trainer.train(resume_from_checkpoint=last)
    after = perplexity()
    steps_run = cfg.max_steps - (int(Path(last).name.split("-")[-1]) if last else 0)
    runtime = result.metrics["train_runtime"]
    metrics = {
        "recipe": recipe, "learning_rate": lr,
        "heldout_perplexity_before": before, "heldout_perplexity_after": after,
        "heldout_blocks": len(eval_rows), "heldout_tokens": len(eval_rows) * cfg.seq_len,
        "train_loss": result.training_loss, "train_tokens": steps_run * cfg.batch_size * cfg.seq_len,
        "tokens_per_s": round(steps_run * cfg.batch_size * cfg.seq_len / max(runtime, 1e-9), 1),
        "train_wall_s": round(runtime, 1), "resumed_from_step": cfg.max_steps - steps_run,
        "peak_rss_mb": _peak_rss_mb(),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
    }
    if not is_writer(trainer, metrics):  # under `accelerate launch` the main process writes the artifact
        return out
    print(f"held-out perplexity: {before:.3f} before, {after:.3f} after ({len(eval_rows)} blocks of {cfg.seq_len})")

    is_adapter = cfg.method == "lora"
    extra = {"base": base_ref(base), "adapter_method": "lora"} if is_adapter else None
    with write_artifact(out, format="adapter" if is_adapter else "hf", stage="pretrain", parent=base,
                        options=to_dict(cfg), metrics=metrics, extra=extra) as tmp:
        trainer.model.save_pretrained(tmp)
        save_tokenizer(tok, tmp)
        if base is None and not (tmp / "tokenizer.model").exists():  # the SentencePiece model GGUF/ONNX read
            shutil.copyfile(folder / "tokenizer" / "tokenizer.model", tmp / "tokenizer.model")
        log.write(tmp / "train_log.json", metrics)
    shutil.rmtree(folder, ignore_errors=True)
    writer_done(trainer)
    return out
