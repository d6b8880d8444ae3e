"""`lifecycle data ...`: synth, collect, prepare and label. Heavy imports stay inside command bodies.

    lifecycle data prepare --input data/ --output out/ds --config configs/data-prepare.yaml --set redact_pii=true
    lifecycle data collect --input https://example.org/page --output pages.jsonl
    lifecycle data label export --input out/ds --schema preference --output pairs.csv
    lifecycle data label import --input pairs.csv --output out/human-prefs
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

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
    from lifecycle.data.collect import write_jsonl_atomic
    from lifecycle.data.load import load_records

    if kind == "pretrain":
        records = [{"text": t} for t in synth.pretrain_lines(n, seed)]
    else:
        records = load_records(f"builtin:{kind}", (), n=n, seed=seed)
    write_jsonl_atomic(output, records)
    print(f"wrote {len(records)} {kind} records to {output}")


InputOpt = Annotated[Optional[list[str]], typer.Option("--input", "-i", help="file, folder, saved HF dataset or http(s) URL (repeatable)")]


def _prepare_epilog() -> str:
    from lifecycle.config import describe
    from lifecycle.data.prepare import PrepareConfig

    return describe(PrepareConfig)


@app.command("prepare", epilog=_prepare_epilog())
def data_prepare(
    input: InputOpt = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="dataset artifact directory to write")] = None,
    format: Annotated[Optional[str], typer.Option(help="auto | alpaca | sharegpt | messages | preference | text")] = None,
    strict: Annotated[Optional[bool], typer.Option("--strict/--no-strict", help="a malformed record stops the run")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file with PrepareConfig fields")] = None,
    set: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override a config field: key=value (repeatable)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing output directory")] = False,
) -> None:
    """Collect, clean, dedup and split data into a dataset artifact (train/validation/test JSONL + HF dataset)."""
    from lifecycle.config import build
    from lifecycle.data import prepare
    from lifecycle.errors import UserError

    cfg = build(prepare.PrepareConfig, config, {"inputs": input or None, "output": str(output) if output else None,
                                                "format": format, "strict": strict}, set)
    if not cfg.output:
        from lifecycle.models import default_output

        cfg.output = str(default_output("dataset"))
    out = Path(cfg.output)
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; choose another --output or pass --overwrite")
    prepare.run(cfg, out, overwrite)
    from lifecycle.artifact import Artifact

    art = Artifact.load(out, verify=False)
    print(f"wrote dataset artifact {out}: " + " ".join(f"{k}={v}" for k, v in art.metrics.items()))


@app.command("collect")
def data_collect(
    input: InputOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file of the raw objects read")] = Path("collected.jsonl"),
    text_unit: Annotated[str, typer.Option(help="plain text files: line | paragraph | document")] = "paragraph",
    timeout: Annotated[float, typer.Option(help="seconds per HTTP request")] = 10.0,
    max_bytes: Annotated[int, typer.Option(help="largest page read when crawling")] = 5_000_000,
    deadline: Annotated[float, typer.Option(help="seconds for a whole page, redirects included")] = 30.0,
    allow_host: Annotated[Optional[list[str]], typer.Option(help="host a page may redirect to besides its own (repeatable)")] = None,
) -> None:
    """Read inputs (files, folders, saved HF datasets, URLs) as they are into one JSONL, reporting failures."""
    from lifecycle.data.collect import read, sources, write_jsonl_atomic
    from lifecycle.data.crawl import CrawlOptions

    opts = CrawlOptions(timeout=timeout, max_bytes=max_bytes, deadline=deadline, allow_hosts=tuple(allow_host or ()))
    failures: list[str] = []

    def rows():
        for src in sources(input or []):
            for item in read(src, text_unit, opts):
                if item.error:
                    failures.append(f"{item.where}: {item.error} [{item.reason}]")
                else:
                    yield item.obj if isinstance(item.obj, dict) else {"text": item.obj}

    n = write_jsonl_atomic(output, rows())
    for line in failures[:20]:
        print(f"failed {line}")
    print(f"wrote {n} records to {output}; {len(failures)} failed (read = {n + len(failures)})")


label_app = typer.Typer(help="Labelling sheets: export rows or pairs for people, import their labels back.",
                        no_args_is_help=True)
app.add_typer(label_app, name="label")


@label_app.command("export")
def label_export(
    input: Annotated[str, typer.Option("--input", "-i", help="dataset artifact, JSONL or any prepare input")],
    schema: Annotated[str, typer.Option(help="instruction | dialogue | classification | preference")],
    output: Annotated[Path, typer.Option("--output", "-o", help="sheet to write: .csv or .jsonl")],
    labels: Annotated[Optional[str], typer.Option(help="comma-separated label set (classification)")] = None,
    limit: Annotated[int, typer.Option(help="most rows (0 = all)")] = 0,
    seed: Annotated[int, typer.Option(help="seed for the A/B order of preference pairs")] = 0,
) -> None:
    """Write a labelling or rating sheet (and its .schema.json) for people to fill in."""
    from lifecycle.data import label
    from lifecycle.data.records import read_normalised

    sch = label.get_schema(schema, labels.split(",") if labels else None)
    records = read_normalised(input)
    if limit:
        records = records[:limit]
    n, skipped = label.export_sheet(records, sch, output, seed)
    print(f"wrote {n} rows to {output} (label column '{sch.label}': {', '.join(sch.labels)})"
          + (f"; {skipped} records did not fit the schema" if skipped else ""))


@label_app.command("import")
def label_import(
    input: Annotated[Path, typer.Option("--input", "-i", help="filled-in sheet (.csv or .jsonl)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="dataset artifact directory to write")],
    schema: Annotated[Optional[str], typer.Option(help="schema name (default: from <sheet>.schema.json)")] = None,
    labels: Annotated[Optional[str], typer.Option(help="comma-separated label set (default: from the schema file)")] = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="write the valid rows even if some rows are invalid")] = False,
    skip_unlabelled: Annotated[bool, typer.Option("--skip-unlabelled", help="ignore rows with no label yet")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing output directory")] = False,
) -> None:
    """Validate a filled-in sheet (errors by row) and write its records as a dataset artifact."""
    from lifecycle.data import label

    sch = label.load_schema_for(input, schema, labels.split(",") if labels else None)
    result = label.write_import(input, sch, output, skip_invalid, skip_unlabelled, overwrite)
    print(f"imported {len(result.records)} records from {result.rows} rows into {output} "
          f"(labels {result.labels}; ties {result.ties}; unlabelled {result.unlabelled}; invalid {len(result.errors)})")
