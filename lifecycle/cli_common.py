"""Pieces every CLI module shares: option aliases, config help, and the run-a-stage helper."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from lifecycle.errors import UserError

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file with config fields")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override a config field: key=value (repeatable)")]
OutputOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="artifact directory to write (default: the local store)")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="replace an existing output directory")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="built-in name, store name or artifact path")]


def epilog(cls_path: str) -> str:
    """Field help for a config class, read without importing the stage's heavy code."""
    import importlib

    from lifecycle.config import describe

    module, name = cls_path.split(":")
    return describe(getattr(importlib.import_module(module), name))


def run_stage(stage: str, cls, run, config: Optional[Path], sets: Optional[list[str]], overrides: dict,
               output: Optional[Path], overwrite: bool) -> Path:
    from lifecycle.config import build
    from lifecycle.models import default_output

    cfg = build(cls, config, overrides, sets)
    out = Path(output or getattr(cfg, "output", "") or default_output(stage))
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --output or pass --overwrite")
    backup = None
    if overwrite and out.exists():  # set aside, not deleted: a failed run puts the old output back
        import os

        backup = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, backup)
    try:
        path = run(cfg, out)
    except BaseException:
        if backup is not None and not out.exists():
            backup.rename(out)
        raise
    if backup is not None:
        import shutil

        shutil.rmtree(backup, ignore_errors=True)
    print_artifact(path)
    return path


def print_artifact(path: Path) -> None:
    from rich.console import Console

    from lifecycle.artifact import Artifact

    art = Artifact.load(path, verify=False)
    shown = {k: v for k, v in art.metrics.items() if isinstance(v, (int, float, str))}
    Console().print(f"[green]wrote[/green] {art.format} artifact {path}")
    if shown:
        Console().print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))


def rich_progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False,
                    disable=bool(os.environ.get("LIFECYCLE_NO_PROGRESS")))
