"""`lifecycle quantize`: convert an `hf` artifact into one or more formats, each with a parity report.

    lifecycle quantize --model tiny-arith --format gguf-q8_0 --output runs/q8
    lifecycle quantize --model runs/merged --format int8 --format gguf-q4_k_m --output runs/quant   # runs/quant/<format>

Heavy libraries are imported inside the command body (by the format modules), never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lifecycle.cli_common import ConfigOpt, ModelOpt, OverwriteOpt, SetOpt
from lifecycle.errors import UserError

def _option_fields(module: str, cls: str = "Options") -> list[str]:
    """Field names of a format module's options dataclass, read from its source (importing the module at
    `--help` time would pull in its libraries)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    tree = ast.parse(open(spec.origin).read())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return [n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
    return []


def _epilog() -> str:
    """The option fields, shared and per format module, derived from the FORMATS registry."""
    from quantize import FORMATS

    by_module: dict[str, list[str]] = {}
    for name, spec in FORMATS.items():
        by_module.setdefault(spec.module, []).append(name)
    shared = _option_fields("quantize.driver", "QuantOptions")
    parts = [f"{', '.join(names)}: {', '.join(f for f in _option_fields(mod) if f not in shared) or '-'}"
             for mod, names in by_module.items()]
    return f"Shared fields (--set key=value): {', '.join(shared)}. Per format: " + "; ".join(parts) + "."


def _format_help() -> str:
    from quantize import FORMATS

    return "format name (repeatable): " + ", ".join(FORMATS)


FormatOpt = Annotated[Optional[list[str]], typer.Option("--format", "-f", help=_format_help())]


def register(root: typer.Typer) -> None:
    @root.command(epilog=_epilog())
    def quantize(
        format: FormatOpt = None,
        model: ModelOpt = None,
        output: Annotated[Optional[Path], typer.Option("--output", "-o", help="artifact directory (one format) or parent folder of <format>/ dirs (several)")] = None,
        config: ConfigOpt = None, set: SetOpt = None, overwrite: OverwriteOpt = False,
    ) -> None:
        """Quantize or convert a merged `hf` checkpoint; print each format's parity report vs the parent."""
        from quantize import FORMATS, format_spec
        from quantize.driver import quantize as run

        sets = list(set or [])
        options: dict = {}
        if config:  # YAML: model, format (name or list), output, plus any option field; CLI values win
            from lifecycle.config import load_yaml

            data = load_yaml(config)
            model = model or data.pop("model", None)
            yaml_formats = data.pop("format", [])
            format = format or ([yaml_formats] if isinstance(yaml_formats, str) else list(yaml_formats))
            yaml_output = data.pop("output", None)
            output = output or (Path(yaml_output) if yaml_output else None)
            options = data  # typed values (a YAML list stays a list); --set strings are applied after them
        if not format:
            raise UserError(f"give at least one --format (known: {', '.join(FORMATS)})")
        for name in format:
            format_spec(name)  # unknown names fail before any work, listing the known ones
        model = model or "tiny-arith"
        if output is None:
            from lifecycle.models import default_output

            output = default_output("quantize")
        outs = [output] if len(format) == 1 else [output / name for name in format]
        from lifecycle.cli_common import rich_progress

        cache: dict = {}
        done = []
        with rich_progress() as progress:
            task = progress.add_task("quantize", total=len(format), info="")
            for name, out in zip(format, outs):
                progress.update(task, info=name)
                sets_for, options_for = _for_format(name, sets, options, several=len(format) > 1)
                done.append(run(model, name, out, sets_for, overwrite=overwrite, parent_cache=cache,
                                options=options_for))
                progress.advance(task)
        _print_table(done, FORMATS)


def _for_format(name: str, sets: list[str], options: dict, several: bool) -> tuple[list[str], dict]:
    """With several formats, a field only some formats have goes to those; with one, unknown fields fail."""
    import dataclasses

    from quantize import format_module

    if not several:
        return sets, options
    fields = {f.name for f in dataclasses.fields(format_module(name).Options)}
    return [s for s in sets if s.split("=", 1)[0].strip() in fields], {k: v for k, v in options.items() if k in fields}


def _print_table(paths: list[Path], formats: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from lifecycle.artifact import Artifact
    from lifecycle.models import human_size

    table = Table("format", "size", "ratio", "top-1", "KL", "greedy", "EM chat", "EM raw", "NLL Δ", "tok/s", box=None)
    notes = []
    for p in paths:
        art = Artifact.load(p, verify=False)
        m = art.metrics
        em, raw = m.get("exact_match"), m.get("raw_exact_match")
        table.add_row(art.format, human_size(m.get("size_bytes", 0)), f"{m.get('ratio_to_parent', 0):.2f}x",
                      f"{m.get('top1_agreement', 0):.3f}", f"{m.get('mean_kl', 0):.1e}", f"{m.get('greedy_agreement', 0):.3f}",
                      "-" if em is None else f"{em:.3f}/{m['parent_exact_match']:.3f}",
                      "-" if raw is None else f"{raw:.3f}/{m['parent_raw_exact_match']:.3f}",
                      "-" if m.get("nll_delta") is None else f"{m['nll_delta']:+.4f}",
                      f"{m.get('decode_tok_s', 0):.0f}")
        notes.append(f"{art.format}: {p}")
        if m.get("compute"):
            notes.append(f"{art.format}: {m['compute']}")
        if m.get("fallback_types"):
            notes.append(f"{art.format}: some weights are stored as {', '.join(m['fallback_types'])} (shape fallbacks, "
                         f"or llama.cpp's higher-precision embeddings); file holds {m.get('tensor_types')}")
    console = Console()
    console.print(table)
    console.print("  agreement and KL vs the parent; EM = held-out exact match, this format/parent (built-in sums "
                  "only); NLL Δ = per-token NLL on held-out generic texts, this format minus parent")
    for n in notes:
        console.print(f"  note: {n}")

