"""`lifecycle data ...`: data preparation commands. Heavy imports stay inside command bodies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Data preparation: build, clean, dedup, label and format datasets.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="data")


@app.command("synth")
def data_synth(
    kind: Annotated[str, typer.Option(help="sft | pref-style | pref-correctness | pref-mixed | pretrain")] = "sft",
    n: Annotated[int, typer.Option(help="number of records")] = 1000,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file to write")] = Path("data.jsonl"),
) -> None:
    """Write synthetic records for the built-in task as JSONL (the same data the built-in stages use)."""
    from lifecycle.data import synth
    from lifecycle.data.load import load_records, write_jsonl

    if kind == "pretrain":
        records = [{"text": t} for t in synth.pretrain_lines(n, seed)]
    else:
        records = load_records(f"builtin:{kind}", (), n=n, seed=seed)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    write_jsonl(tmp, records)
    tmp.replace(output)
    print(f"wrote {len(records)} {kind} records to {output}")
