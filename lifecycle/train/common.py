"""Pieces every training stage shares: progress bars and logs, trainer arguments, the arithmetic stage check.

Model and tokenizer loading live in `lifecycle.loading` (shared with the engines and quantize); the names
below are re-exported for the stages that import them from here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lifecycle.cli_common import rich_progress  # noqa: F401  (stages import it from here)
from lifecycle.loading import (adapter_base, base_ref, load_causal_lm, quiet_libraries, save_tokenizer,  # noqa: F401
                               setup_torch)


class MetricsLog:
    """Collects step logs (loss curve etc.) and writes them as JSON next to the artifact files."""

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.started = time.time()

    def add(self, step: int, **values: float) -> None:
        self.history.append({"step": step, **{k: float(v) for k, v in values.items()}})

    def write(self, path: Path, summary: dict) -> None:
        data = {"summary": summary, "history": self.history, "wall_s": round(time.time() - self.started, 2)}
        path.write_text(json.dumps(data, indent=2))


def progress_callback(log: MetricsLog, description: str):
    """A transformers TrainerCallback that drives a rich progress bar and records every log line."""
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        # under `accelerate launch` only the main process draws the bar (every process records the log)
        def on_train_begin(self, args, state, control, **kw):
            self.progress = rich_progress()
            if not state.is_world_process_zero:
                self.progress.disable = True
            self.progress.start()
            self.task = self.progress.add_task(description, total=state.max_steps, info="")

        def on_step_end(self, args, state, control, **kw):
            self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            if logs:
                log.add(state.global_step, **logs)
                if "loss" in logs:
                    self.progress.update(self.task, info=f"loss {logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kw):
            self.progress.stop()

    return _Progress()


def drop_printer(trainer) -> None:
    """With tqdm disabled, transformers prints raw log dicts; our progress callback replaces that."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def world_size() -> int:
    """Processes in this training run: 1 alone, N under `accelerate launch --num_processes N` (or torchrun)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def use_cpu() -> bool:
    """Train on CPU, as always alone; several processes on a CUDA machine (DDP/FSDP) use their GPUs."""
    if world_size() == 1:
        return True
    import torch

    return not torch.cuda.is_available()


def per_device_batch(batch_size: int) -> int:
    """`batch_size` is the global batch (sequences per optimizer step); each of N processes takes 1/N of it,
    so a run under `accelerate launch` follows the same loss curve as one process."""
    n = world_size()
    if batch_size % n:
        from lifecycle.errors import UserError

        raise UserError(f"batch_size {batch_size} does not split over {n} processes; use a multiple of {n}")
    return batch_size // n


def is_writer(trainer, metrics: dict) -> bool:
    """After `trainer.train()`: True where this process evaluates and writes the artifact (always alone; the
    main process under `accelerate launch`, whose replica DDP keeps equal to the others). A process that is
    not the writer has waited for the writer to finish. The writer calls `writer_done` after writing."""
    accelerator = trainer.accelerator
    if accelerator.num_processes == 1:
        return True
    metrics["processes"] = accelerator.num_processes
    if accelerator.is_main_process:
        return True
    accelerator.wait_for_everyone()
    return False


def writer_done(trainer) -> None:
    """The writer's side of `is_writer`: release the other processes once the artifact is in place."""
    if trainer.accelerator.num_processes > 1:
        trainer.accelerator.wait_for_everyone()


def trainer_common_args(output_dir: str, cfg) -> dict:
    """TrainingArguments shared by the TRL stages (CPU, no hub, no external loggers, our progress bar).

    Under `accelerate launch` (WORLD_SIZE > 1) the Trainer runs DDP, over gloo on CPU; `batch_size` stays the
    global batch."""
    return dict(
        output_dir=output_dir,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=per_device_batch(cfg.batch_size),
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, cfg.max_steps // 20),
        logging_steps=max(1, min(10, cfg.max_steps // 10)),
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=use_cpu(),
        seed=cfg.seed,
        dataloader_num_workers=0,
        log_level="error",
        gradient_checkpointing=False,  # TRL turns it on by default; tiny models only pay its recompute cost
    )


def stage_eval(model, tok, n: int, profile: str = "arith") -> dict:
    """Held-out exact match and verbose rate in the chat format, and exact match of raw `a+b=` text.

    Only for the built-in arithmetic lineage (`lifecycle.models.task_profile`); other models get nothing
    here and are measured by `lifecycle eval` / ship's eval stage on their own tasks."""
    if not n or profile != "arith":
        return {}
    from lifecycle.engines.hf import HFEngine
    from lifecycle.eval.arith import chat_eval, raw_eval

    engine = HFEngine(model, tok)
    chat, raw = chat_eval(engine, n=n), raw_eval(engine, n=n)
    return {"exact_match": chat["exact_match"], "verbose_rate": chat["verbose_rate"],
            "raw_exact_match": raw["raw_exact_match"], "eval_items": n}
