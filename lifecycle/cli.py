"""The `lifecycle` command line. Commands are thin: they build a config and call a stage's `run`.

Heavy libraries are imported inside command bodies so that `lifecycle --help` imports no torch,
transformers or ray. Exit status: 0 done; 1 a release refused by a gate (and nothing else); 2 a user error,
printed as one line (`error: ...`), a missing optional dependency included; 3 an internal error, printed as
one line that names the crash log holding the traceback; 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lifecycle.cli_common import ConfigOpt, ModelOpt, OutputOpt, OverwriteOpt, SetOpt, epilog, run_stage
from lifecycle.errors import UserError

app = typer.Typer(
    name="lifecycle",
    help="Train, align, merge, evaluate and ship a language model. "
         "Start with `lifecycle ship` (the built-in default) or `lifecycle models`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.command(epilog=epilog("lifecycle.train.pretrain:PretrainConfig"))
def pretrain(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="continue pretraining this checkpoint (built-in name, store name or path); needs --data")] = None,
    data: Annotated[Optional[str], typer.Option(help="corpus: a .txt, a .jsonl with a text field, a folder of shards or a dataset artifact; omit for the built-in synthetic sums")] = None,
    preset: Annotated[Optional[str], typer.Option(help="from scratch (no --model): model shape, tiny-arith or micro")] = None,
    method: Annotated[Optional[str], typer.Option(help="with --model: full (hf checkpoint) or lora (adapter)")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="optimizer steps")] = None,
    config: ConfigOpt = None, set: SetOpt = None, output: OutputOpt = None, overwrite: OverwriteOpt = False,
) -> None:
    """Pretrain: the built-in base on synthetic sums, continued pretraining of any causal LM on your corpus
    (--model M --data CORPUS, full or LoRA), or a preset shape from scratch with a tokenizer trained on your
    corpus (--preset NAME --data CORPUS). With --data, held-out perplexity is reported before and after, and
    rerunning a killed command resumes from its last checkpoint."""
    from lifecycle.train import pretrain as stage

    run_stage("pretrain", stage.PretrainConfig, stage.run, config, set,
               {"model": model, "data": data, "preset": preset, "method": method, "max_steps": max_steps},
               output, overwrite)


@app.command(epilog=epilog("lifecycle.train.sft:SFTConfig"))
def sft(
    model: ModelOpt = None,
    data: Annotated[Optional[str], typer.Option(help="builtin:sft, a .jsonl of {'messages': [...]}, or a dataset artifact")] = None,
    method: Annotated[Optional[str], typer.Option(help="lora | dora | full")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="optimizer steps")] = None,
    config: ConfigOpt = None, set: SetOpt = None, output: OutputOpt = None, overwrite: OverwriteOpt = False,
) -> None:
    """Supervised fine-tuning (TRL) with LoRA, DoRA or full updates, loss on assistant tokens only."""
    from lifecycle.train import sft as stage

    run_stage("sft", stage.SFTConfig, stage.run, config, set,
               {"model": model, "data": data, "method": method, "max_steps": max_steps}, output, overwrite)


@app.command(epilog=epilog("lifecycle.train.merge:MergeConfig"))
def merge(
    model: ModelOpt = None,
    tolerance: Annotated[Optional[float], typer.Option(help="max abs logits difference allowed")] = None,
    config: ConfigOpt = None, set: SetOpt = None, output: OutputOpt = None, overwrite: OverwriteOpt = False,
) -> None:
    """Merge an adapter into its base: an `hf` checkpoint, refused unless logits match (max abs diff)."""
    from lifecycle.train import merge as stage

    run_stage("merged", stage.MergeConfig, stage.run, config, set,
               {"model": model, "tolerance": tolerance}, output, overwrite)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="the prompt text")],
    model: Annotated[str, typer.Option("--model", "-m", help="built-in name, store name or artifact path")] = "tiny-arith",
    chat: Annotated[bool, typer.Option(help="wrap the prompt as a user chat message (chat template)")] = True,
    max_tokens: Annotated[int, typer.Option(help="most tokens to generate")] = 32,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.0,
    top_p: Annotated[float, typer.Option(help="nucleus sampling mass")] = 1.0,
    seed: Annotated[Optional[int], typer.Option(help="sampling seed")] = None,
    stream: Annotated[bool, typer.Option(help="print tokens as they are produced")] = True,
) -> None:
    """Generate from any artifact through its Engine (one prompt, streamed)."""
    from lifecycle.engine import SamplingParams, load_engine

    engine = load_engine(model, threads=1)
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
    p = [{"role": "user", "content": prompt}] if chat else prompt
    if stream:
        for ev in engine.stream(p, params):
            sys.stdout.write(ev.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        print(engine.generate([p], params)[0].text)


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list instead of a table")] = False,
    dir: Annotated[Optional[list[Path]], typer.Option("--dir", help="also list artifacts in this folder")] = None,
) -> None:
    """List built-in and local artifacts (name, format, size, parent), like `ollama list`."""
    from lifecycle.models import human_size, list_models, store_dir

    rows = list_models(dir)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("NAME", "FORMAT", "SIZE", "BUILTIN", "PARENT", "PATH", box=None)
    for r in rows:
        table.add_row(r["name"], r["format"], human_size(r["size"]), "yes" if r["builtin"] else "",
                      Path(r["parent"]).name if r["parent"] else "", r["path"])
    Console().print(table)
    if not any(not r["builtin"] for r in rows):
        Console().print(f"(no local artifacts yet in {store_dir()})")


@app.command()
def show(
    artifact: Annotated[str, typer.Argument(help="artifact path or name")],
    verify: Annotated[bool, typer.Option("--verify", help="re-hash every byte instead of trusting the remembered "
                                                           "hashes of files whose size and mtime are unchanged")] = False,
) -> None:
    """Verify an artifact's files against its manifest and print the manifest."""
    from lifecycle.models import resolve

    art = resolve(artifact, verify="full" if verify else True)
    manifest = dict(art.manifest)
    manifest["files"] = f"{len(art.files)} files, all sha256 verified" + (" (every byte)" if verify else "")
    print(json.dumps(manifest, indent=2, default=str))


@app.command(epilog=epilog("lifecycle.release.config:ShipConfig"))
def ship(
    config: ConfigOpt = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="release directory (default: releases/<timestamp>)")] = None,
    set: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Build a release: data, SFT, align, merge, quantize, eval, bench (and deploy), then gate it.

    Every stage is cached by a hash of its inputs, config and code. A re-run with nothing changed redoes nothing; a killed run resumes from the last completed stage.

    Nested fields take dotted keys: --set bench.enabled=false, --set formats.int8={eval_items: 50}.

    The release directory holds the artifacts, release.json, a model card (README.md) and report.html. Exit status: 0 shipped, 1 refused by a gate, 2 bad input.
    """
    from lifecycle.release import pipeline

    verdict = pipeline.main(config, output, set, overwrite)
    raise typer.Exit(0 if verdict == "shipped" else 1)


def _register_areas() -> None:
    """Each area adds its own commands; their modules import nothing heavy at module level."""
    from lifecycle.align.cli import register as register_align
    from lifecycle.data.cli import register as register_data
    from lifecycle.eval.cli import register as register_eval
    from lifecycle.release.releases import register as register_releases
    from perf.cli import register as register_perf
    from quantize.cli import register as register_quantize
    from serve.cli import register as register_serve

    for register in (register_align, register_data, register_eval, register_quantize, register_serve,
                     register_perf, register_releases):
        register(app)


_register_areas()


# Optional quantization libraries log import-time chatter (missing CUDA kernels, deprecations) at WARNING;
# it is noise on a CPU and would bury the one-line errors this CLI promises.
NOISY_LOGGERS = ("torchao", "bitsandbytes", "torch.utils._pytree")


EXIT_USER_ERROR, EXIT_CRASH = 2, 3


def crash_log(exc: BaseException) -> Path:
    """Write the traceback of an unexpected exception under $LIFECYCLE_HOME/logs and return the file."""
    import datetime as _dt
    import os
    import traceback

    from lifecycle.models import home

    logs = home() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = logs / f"crash-{stamp}-{os.getpid()}.log"
    path.write_text(f"command: {' '.join(sys.argv)}\n\n" + "".join(traceback.format_exception(exc)))
    return path


def main() -> None:
    import logging
    import os

    # Idle OpenMP threads sleep instead of spinning. torch and llama.cpp each bring an OpenMP runtime; with
    # both loaded (ship, quantize, eval of several formats) their spinning threads starve each other on a
    # small CPU: a GGUF eval after a torch one took 102 s instead of 21 s on 2 cores. Set before any import.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        app()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except ModuleNotFoundError as e:
        from lifecycle.extras import install_hint

        print(f"error: {install_hint(e.name or '')}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except Exception as e:  # a bug or an environment failure: one line here, the traceback in a file
        where = crash_log(e)
        print(f"internal error: {type(e).__name__}: {str(e)[:300]} (traceback: {where})", file=sys.stderr)
        sys.exit(EXIT_CRASH)


if __name__ == "__main__":
    main()
