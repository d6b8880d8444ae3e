"""Pieces every training stage shares: threads and seeds, model loading by artifact, progress and logs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from lifecycle.artifact import Artifact
from lifecycle.errors import UserError


def setup_torch(threads: int, seed: int) -> None:
    """Pin torch's thread count (the default oversubscribes 2 shared cores badly) and seed everything."""
    import torch
    from transformers import set_seed

    if threads > 0:
        torch.set_num_threads(threads)
    set_seed(seed)
    quiet_libraries()


def quiet_libraries() -> None:
    """Silence library progress bars and deprecation chatter; our own progress bar reports the work."""
    import importlib.util
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if importlib.util.find_spec("datasets"):
        import datasets

        datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(trl|peft)\..*")
    if importlib.util.find_spec("logbar"):
        # gptqmodel (which peft imports during any LoRA run) prints a banner and a GIL notice through its
        # LogBar logger; LogBar replaces plain logging levels, so set it on LogBar's shared instance.
        import logging

        from logbar import LogBar

        LogBar.shared().setLevel(logging.ERROR)


def load_causal_lm(art: Artifact, trust_remote_code: bool = False, dtype: str = "float32"):
    """Return (model, tokenizer) for an `hf` checkpoint or an `adapter` artifact (base merged in memory).

    Adapters stack: an adapter's base may itself be an adapter; each level is merged before the next.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if art.format == "hf":
        tok = AutoTokenizer.from_pretrained(str(art.path), trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            str(art.path), dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code)
        return model, tok
    if art.format == "adapter":
        model, tok = load_causal_lm(adapter_base(art), trust_remote_code, dtype)
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(art.path)).merge_and_unload()
        return model, tok
    raise UserError(f"{art.path} has format '{art.format}'; training needs an 'hf' or 'adapter' artifact")


def adapter_base(art: Artifact) -> Artifact:
    """The artifact an adapter was trained on, verified (its path and manifest hash are in `base`)."""
    base = art.manifest.get("base")
    if not base:
        raise UserError(f"adapter {art.path} records no base model in its manifest")
    recorded = Path(base["path"])
    # A release directory may have moved since training: also look beside the adapter and by name.
    for candidate in (recorded, art.path.parent / recorded.name, Path(__file__).parents[1] / "builtin" / recorded.name):
        if (candidate / "manifest.json").is_file() or (candidate / "config.json").is_file():
            parent = Artifact.load(candidate, verify=False)
            if parent.manifest_sha256 == base["sha256"]:
                parent.verify()
                return parent
    raise UserError(f"adapter {art.path}: its base {recorded} is missing or changed since the adapter was trained "
                    f"(expected manifest sha256 {base['sha256'][:12]}…)")


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


def rich_progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False,
                    disable=bool(os.environ.get("LIFECYCLE_NO_PROGRESS")))


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


def base_ref(art: Artifact) -> dict:
    """How an adapter names its base: path plus manifest sha256, checked again when the adapter loads."""
    from lifecycle.artifact import parent_ref

    return parent_ref(art)


def stage_eval(model, tok, n: int) -> dict:
    """Held-out exact match and verbose rate in the chat format, and exact match of raw `a+b=` text."""
    from lifecycle.engines.hf import HFEngine
    from lifecycle.eval.arith import chat_eval, raw_eval

    engine = HFEngine(model, tok)
    chat, raw = chat_eval(engine, n=n), raw_eval(engine, n=n)
    return {"exact_match": chat["exact_match"], "verbose_rate": chat["verbose_rate"],
            "raw_exact_match": raw["raw_exact_match"], "eval_items": n}


def save_tokenizer(tok, dest: Path) -> None:
    """Save a tokenizer with its SentencePiece model: transformers 5 writes only tokenizer.json, but the
    llama.cpp converter and onnxruntime-genai read `tokenizer.model`."""
    import shutil

    tok.save_pretrained(str(dest))
    source = getattr(tok, "vocab_file", None)
    if source and Path(source).is_file() and not (Path(dest) / "tokenizer.model").exists():
        shutil.copyfile(source, Path(dest) / "tokenizer.model")
