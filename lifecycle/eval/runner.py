"""Run eval tasks through an Engine (an artifact's or an endpoint's), compare with a baseline, apply gates.

    report = evaluate(model="tiny-arith", tasks=["addition-raw", "arith-ppl"],
                      baseline="runs/merged", gates="configs/gates-default.yaml")

The report (written by `lifecycle eval --output`) is documented in lifecycle/eval/README.md. Flat metric
keys are `<task>/<metric>`. A baseline is an artifact (its tasks are run too), an endpoint URL, or an
earlier report JSON (its metrics are reused, so changing only the gates re-decides without re-running).
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lifecycle.config import field as cfield
from lifecycle.engine import Engine
from lifecycle.errors import UserError
from lifecycle.eval import gates as G
from lifecycle.eval.tasks import Task, resolve_tasks

SCHEMA = "lifecycle.eval/1"


@dataclass
class EvalConfig:
    model: str | None = cfield(None, help="candidate: built-in name, store name or artifact path")
    endpoint: str | None = cfield(None, help="candidate: OpenAI-compatible base URL instead of model")
    endpoint_model: str | None = cfield(None, help="model name at the endpoint (default: the first listed)")
    tasks: list[str] = cfield([], help="task names, task YAML paths or mmlu:DIR/cmmlu:DIR (empty: built-in set)")
    baseline: str | None = cfield(None, help="artifact, endpoint URL or earlier report JSON to compare with")
    gates: str | None = cfield(None, help="gate YAML; relative rules need a baseline")
    output: str | None = cfield(None, help="JSON report path")
    judge_endpoint: str | None = cfield(None, help="judge model URL for preference tasks")
    threads: int = cfield(0, help="torch threads for local models (0 = leave as is); 1 is fastest on shared cores")

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise UserError(f"threads must be >= 0, got {self.threads}")


@dataclass
class Context:
    """What a task may need beyond its own engine."""

    baseline_engine: Engine | None = None
    baseline_outputs: dict = field(default_factory=dict)  # task name -> baseline replies (preference)
    judge_endpoint: str | None = None
    judge_model: str | None = None


def flatten(results: dict[str, dict]) -> dict[str, float]:
    return {f"{name}/{k}": v for name, r in results.items() for k, v in r["metrics"].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_tasks(tasks: list[Task], engine: Engine, ctx: Context | None = None, log=None) -> dict[str, dict]:
    ctx = ctx or Context()
    results = {}
    for task in tasks:
        t0 = time.perf_counter()
        out = task.runner()(task, engine, ctx)
        entry = {"type": task.type, "metrics": out["metrics"], "samples": out.get("samples", []),
                 "wall_s": round(time.perf_counter() - t0, 3)}
        if task.type == "preference":
            entry.update(against=out.get("against"), outputs=out.get("outputs"))
        results[task.name] = entry
        if log:
            shown = {k: v for k, v in out["metrics"].items() if isinstance(v, float) and "/" not in k}
            log(f"{task.name}: " + "  ".join(f"{k}={v:.4g}" for k, v in shown.items()) + f"  ({entry['wall_s']:.1f}s)")
    return results


def baseline_outputs(tasks: list[Task], engine: Engine) -> dict[str, list[str]]:
    """The baseline's replies for preference tasks (judged against the candidate's)."""
    from lifecycle.eval.generation import params_for

    return {t.name: [o.text for o in engine.generate([t.prompt(it) for it in t.items()], params_for(t, 32))]
            for t in tasks if t.type == "preference"}


def open_engine(model: str | None = None, endpoint: str | None = None, endpoint_model: str | None = None,
                threads: int = 0) -> tuple[Engine, dict]:
    """An Engine and a description of it for the report."""
    if bool(model) == bool(endpoint):
        raise UserError("give exactly one of --model (an artifact) or --endpoint (an OpenAI-compatible URL)")
    if endpoint:
        from lifecycle.eval.endpoint import EndpointEngine

        engine = EndpointEngine(endpoint, endpoint_model)
        return engine, {"endpoint": engine.url, "model": engine.model}
    from lifecycle.engine import load_engine
    from lifecycle.models import resolve

    art = resolve(model)
    engine = load_engine(art)
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return engine, {"spec": model, "path": str(art.path), "name": art.name, "format": art.format,
                    "manifest_sha256": art.manifest_sha256}


def load_report(path: str | Path) -> dict:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read eval report {p}: {e}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UserError(f"{p} is not a lifecycle eval report (schema {SCHEMA})")
    return data


def evaluate(model: str | None = None, endpoint: str | None = None, tasks: list[str] | None = None,
             baseline: str | None = None, gates: str | Path | None = None, endpoint_model: str | None = None,
             judge_endpoint: str | None = None, threads: int = 0, log=None) -> dict:
    """Run the tasks on the candidate (and the baseline), apply the gates, return the report dict."""
    task_list = resolve_tasks(tasks)
    rules = G.load_gates(gates) if gates else []
    if any(r.relative for r in rules) and not baseline:
        raise UserError(f"{gates} has rules relative to a baseline; pass --baseline (an artifact, URL or report)")
    ctx = Context(judge_endpoint=judge_endpoint)
    base_info = base_metrics = None
    if baseline:
        if baseline.endswith(".json") and Path(baseline).is_file():
            prev = load_report(baseline)
            base_info = {"report": str(Path(baseline).resolve()), **{"model": prev.get("model")}}
            base_metrics = prev["metrics"]
            ctx.baseline_outputs = {n: r.get("outputs") for n, r in prev.get("tasks", {}).items() if r.get("outputs")}
        else:
            is_url = baseline.startswith(("http://", "https://"))
            b_engine, base_info = open_engine(None if is_url else baseline, baseline if is_url else None, threads=threads)
            if log:
                log(f"baseline: {base_info.get('name') or base_info.get('endpoint')}")
            plain = [t for t in task_list if t.type != "preference"]
            base_metrics = flatten(run_tasks(plain, b_engine, Context(judge_endpoint=judge_endpoint), log))
            ctx.baseline_outputs = baseline_outputs(task_list, b_engine)
            b_engine.close()
    engine, info = open_engine(model, endpoint, endpoint_model, threads)
    if log:
        log(f"candidate: {info.get('name') or info.get('endpoint')}")
    t0 = time.perf_counter()
    results = run_tasks(task_list, engine, ctx, log)
    engine.close()
    from lifecycle.artifact import code_version

    metrics = flatten(results)
    rows = G.evaluate(rules, metrics, base_metrics) if rules else []
    return {
        "schema": SCHEMA,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "model": info,
        "baseline": base_info,
        "tasks": results,
        "metrics": metrics,
        "baseline_metrics": base_metrics,
        "gates_file": str(gates) if gates else None,
        "gates": rows,
        "passed": G.passed(rows) if rules else None,
        "wall_s": round(time.perf_counter() - t0, 3),
    }


def regate(report: dict, gates: str | Path, baseline_report: dict | None = None) -> dict:
    """Re-decide an existing report under new gates (no model is run)."""
    rules = G.load_gates(gates)
    base = (baseline_report or {}).get("metrics") or report.get("baseline_metrics")
    rows = G.evaluate(rules, report["metrics"], base)
    return {**report, "baseline_metrics": base, "gates_file": str(gates), "gates": rows, "passed": G.passed(rows)}
