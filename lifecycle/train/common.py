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
        def on_train_begin(self, args, state, control, **kw):
            self.progress = rich_progress()
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


def trainer_common_args(output_dir: str, cfg) -> dict:
    """TrainingArguments shared by the TRL stages (CPU, no hub, no external loggers, our progress bar)."""
    return dict(
        output_dir=output_dir,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, cfg.max_steps // 20),
        logging_steps=max(1, min(10, cfg.max_steps // 10)),
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
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
