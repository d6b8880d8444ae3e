"""`lifecycle eval ...`: evaluate an artifact or an endpoint, gate it, and run human-eval sheets.

    lifecycle eval --model tiny-arith                                   # the built-in tasks
    lifecycle eval --model runs/int8 --baseline runs/merged --gates configs/gates-default.yaml -o eval.json
    lifecycle eval --endpoint http://127.0.0.1:8000 --tasks addition,ifeval-tiny
    lifecycle eval gate eval.json --gates configs/gates-strict.yaml    # re-decide, no model run
    lifecycle eval compare base.json sft.json merged.json --markdown    # one table, one column each
    lifecycle eval tasks                                                # list the built-in tasks

Exit status: 0 when every gate passes (or there are none), 1 when a gate fails, 2 on a usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Evaluate a model or endpoint on tasks, compare with a baseline, and apply release gates.",
                  invoke_without_command=True, no_args_is_help=False)

TasksOpt = Annotated[Optional[list[str]], typer.Option("--tasks", "-t", help="built-in task names, task YAML paths, or mmlu:DIR / cmmlu:DIR (comma-separated or repeated; default: the built-in set)")]


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="eval")


def _log(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(msg, highlight=False)


@app.callback(epilog="EvalConfig fields can also come from --config YAML or --set key=value.")
def eval_main(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="built-in name, store name or artifact path")] = None,
    endpoint: Annotated[Optional[str], typer.Option(help="OpenAI-compatible base URL instead of --model")] = None,
    endpoint_model: Annotated[Optional[str], typer.Option(help="model name at --endpoint (default: the first listed)")] = None,
    tasks: TasksOpt = None,
    baseline: Annotated[Optional[str], typer.Option(help="baseline: artifact, endpoint URL, or an earlier eval report JSON")] = None,
    gates: Annotated[Optional[Path], typer.Option(help="gate YAML (absolute and baseline-relative rules)")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write the JSON report here")] = None,
    judge_endpoint: Annotated[Optional[str], typer.Option(help="judge model URL for preference tasks")] = None,
    threads: Annotated[Optional[int], typer.Option(help="torch threads for local models (0 = leave as is)")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file with EvalConfig fields")] = None,
    set: Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override a config field: key=value")] = None,
) -> None:
    """Evaluate --model or --endpoint on tasks; print metric, value, baseline, delta, rule, result.

    Exit status 0 when every gate passes (or none are given), 1 when a gate fails, 2 on a usage error.
    """
    if ctx.invoked_subcommand is not None:
        return
    from lifecycle.config import build
    from lifecycle.eval.report import print_table, write_json
    from lifecycle.eval.runner import EvalConfig, evaluate

    cfg = build(EvalConfig, config, {
        "model": model, "endpoint": endpoint, "endpoint_model": endpoint_model, "tasks": tasks or None,
        "baseline": baseline, "gates": str(gates) if gates else None, "output": str(output) if output else None,
        "judge_endpoint": judge_endpoint, "threads": threads}, set)
    report = evaluate(model=cfg.model, endpoint=cfg.endpoint, tasks=cfg.tasks, baseline=cfg.baseline,
                      gates=cfg.gates, endpoint_model=cfg.endpoint_model, judge_endpoint=cfg.judge_endpoint,
                      threads=cfg.threads, log=_log)
    print_table(report)
    if cfg.output:
        write_json(cfg.output, report)
        _log(f"wrote {cfg.output}")
    if report["passed"] is False:
        raise typer.Exit(1)


@app.command("gate")
def eval_gate(
    report: Annotated[Path, typer.Argument(help="an eval report JSON (from --output)")],
    gates: Annotated[Path, typer.Option(help="gate YAML")],
    baseline: Annotated[Optional[Path], typer.Option(help="a baseline eval report JSON (default: the report's own)")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write the re-gated report here")] = None,
) -> None:
    """Re-apply gates to an existing report (pure: no model is run). Exit 1 when a gate fails."""
    from lifecycle.eval.report import print_table, write_json
    from lifecycle.eval.runner import load_report, regate

    new = regate(load_report(report), gates, load_report(baseline) if baseline else None)
    print_table(new)
    if output:
        write_json(output, new)
    if not new["passed"]:
        raise typer.Exit(1)


@app.command("compare")
def eval_compare(
    reports: Annotated[list[Path], typer.Argument(help="eval report JSON files, one column each")],
    markdown: Annotated[bool, typer.Option(help="print a Markdown table (for a README)")] = False,
) -> None:
    """Print several eval reports side by side (e.g. base -> SFT -> DPO -> merged -> each format)."""
    from lifecycle.eval.report import print_compare
    from lifecycle.eval.runner import load_report

    print_compare([load_report(p) for p in reports], markdown)


@app.command("tasks")
def eval_tasks() -> None:
    """List the built-in tasks (name, type, description)."""
    from lifecycle.eval.tasks import DEFAULT_TASKS, builtin_tasks, load_task

    for name, path in builtin_tasks().items():
        t = load_task(path)
        mark = "*" if name in DEFAULT_TASKS else " "
        print(f"{mark} {name:<16} {t.type:<11} {t.opt('description', '')}")
    print("(* = run by default)")


@app.command("human-export")
def human_export(
    model: Annotated[str, typer.Option("--model", "-m", help="candidate artifact")],
    baseline: Annotated[str, typer.Option(help="baseline artifact")],
    output: Annotated[Path, typer.Option("--output", "-o", help="sheet CSV to write (the key goes beside it)")],
    tasks: TasksOpt = None,
    limit: Annotated[int, typer.Option(help="most prompts per task")] = 50,
    seed: Annotated[int, typer.Option(help="shuffle seed")] = 0,
) -> None:
    """Write a blind, shuffled side-by-side rating sheet (CSV) and its key (JSON)."""
    from lifecycle.eval.generation import params_for
    from lifecycle.eval.human import export_sheet
    from lifecycle.eval.runner import open_engine
    from lifecycle.eval.tasks import resolve_tasks

    chosen = [t for t in resolve_tasks(tasks or ["style"]) if t.type in ("generate", "preference", "ifeval", "safety")]
    if not chosen:
        from lifecycle.errors import UserError

        raise UserError("human-export needs tasks that generate replies (generate, preference, ifeval, safety)")
    replies: dict[str, list[str]] = {"candidate": [], "baseline": []}
    prompts: list[str] = []
    for side, spec in (("candidate", model), ("baseline", baseline)):
        engine, _ = open_engine(spec)
        for t in chosen:
            items = t.items()[:limit]
            ps = [t.prompt(it) for it in items]
            replies[side] += [o.text for o in engine.generate(ps, params_for(t, 32))]
            if side == "candidate":
                prompts += [p if isinstance(p, str) else p[-1]["content"] for p in ps]
        engine.close()
    key = export_sheet(prompts, replies["candidate"], replies["baseline"], output, seed,
                       {"candidate": model, "baseline": baseline})
    print(f"wrote {len(prompts)} rows to {output}; key (keep from raters): {key}")


@app.command("human-import")
def human_import(
    sheets: Annotated[list[Path], typer.Argument(help="filled sheet CSV files (one per rater)")],
    key: Annotated[Path, typer.Option(help="the key JSON written by human-export")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write the aggregate JSON here")] = None,
    skip_bad: Annotated[bool, typer.Option(help="aggregate the good rows and list the bad ones")] = False,
) -> None:
    """Validate filled sheets (bad rows named by row number) and aggregate: mean + 95% CI, win rate."""
    from lifecycle.eval.human import CRITERIA, aggregate, flat_metrics, import_sheets
    from lifecycle.eval.report import write_json

    rows, errors = import_sheets(sheets, key, skip_bad)
    for e in errors:
        _log(f"skipped {e}")
    summary = aggregate(rows)
    for c in CRITERIA:
        for side in ("candidate", "baseline"):
            s = summary[f"{side}/{c}"]
            print(f"{c:<11} {side:<9} mean {s['mean']:.2f}  95% CI [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]")
    w = summary["win_rate"]
    print(f"win rate (candidate) {w['mean']:.3f}  95% CI [{w['ci95'][0]:.3f}, {w['ci95'][1]:.3f}]  n={summary['n']}")
    if output:
        write_json(output, {"summary": summary, "metrics": flat_metrics(summary), "bad_rows": errors})
