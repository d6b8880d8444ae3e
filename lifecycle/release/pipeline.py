"""`lifecycle ship`: from a release config to a shipped or refused release directory, through the stage cache.

    lifecycle ship                                            # the built-in default, into releases/<timestamp>
    lifecycle ship --config configs/ship-default.yaml -o releases/r1
    lifecycle ship -o releases/r2 --set gates.all='[addition/exact_match >= 0.95]'   # re-decides only

Flow: optional continued pretraining on a corpus -> data (prepare) -> SFT -> align -> merge (parity) ->
quantize (each format, parity) -> eval (base, merged, each format) -> bench (each servable artifact) ->
optional deploy (serve, smoke test, Locust) -> gates.
The release is assembled in a temp directory beside the output and renamed into place when complete.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import time
from pathlib import Path
from typing import Optional

from lifecycle.errors import UserError
from lifecycle.release.config import ShipConfig

SCHEMA = "lifecycle.release/1"
SKIPPED_PREFIX = {"bench/": "bench", "deploy/": "deploy"}


def gate_rules(gates: dict, name: str) -> list:
    from lifecycle.eval.gates import parse_rule

    scopes = ["all", "merged"] if name == "merged" else ["all", "quantized", name]
    return [parse_rule(r, f"gates.{s}") for s in scopes for r in gates.get(s, [])]


def decide(gates: dict, metrics: dict[str, dict], disabled: set[str] = frozenset()) -> tuple[list[dict], list[str]]:
    """Gate rows for every artifact (merged is the baseline of relative rules) and one line per failure.

    Pure: the same gates and metrics always give the same rows. Rules on metrics of a disabled stage
    (bench/..., deploy/...) are listed as skipped (passed None) and do not refuse the release.
    """
    from lifecycle.eval import gates as G

    rows, failed = [], []
    baseline = metrics.get("merged", {})
    for name, found in metrics.items():
        for rule in gate_rules(gates, name):
            [row] = G.evaluate([rule], found, baseline)
            stage = next((s for p, s in SKIPPED_PREFIX.items() if rule.metric.startswith(p)), None)
            if stage in disabled:
                row.update(passed=None, reason=f"skipped: {stage}.enabled is false")
            v, t = row["value"], row["threshold"]
            row = {"artifact": name, **row,
                   "by": round(v - t, 6) if isinstance(v, (int, float)) and isinstance(t, (int, float)) else None}
            rows.append(row)
            if row["passed"] is False:
                detail = row["reason"] or f"{_num(v)} vs {_num(t)} (by {_num(row['by'])})"
                failed.append(f"{name}: {row['rule']}: {detail}")
    return rows, failed


def _num(v) -> str:
    return f"{v:.6g}" if isinstance(v, (int, float)) else str(v)


def run(cfg: ShipConfig, release: Path, overwrite: bool = False) -> dict:
    from rich.console import Console

    from lifecycle.atomic import atomic_dir
    from lifecycle.release.cache import StageCache, cache_root

    console = Console(highlight=False, soft_wrap=True)
    release = release.expanduser().resolve()
    if release.exists() and not overwrite:
        raise UserError(f"{release} already exists; choose another --output or pass --overwrite")
    release.parent.mkdir(parents=True, exist_ok=True)
    for stale in release.parent.glob(f".{release.name}.tmp-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    t0 = time.perf_counter()
    with StageCache(cache_root(cfg.cache_dir)) as cache, atomic_dir(release) as work:
        report = _build(cfg, cache, work, release.name, console.print)
        report["wall_s"] = round(time.perf_counter() - t0, 1)
        _write_outputs(work, report)
    for line in report["failed"]:
        console.print(f"[red]gate failed[/red] {line}")
    color = "green" if report["verdict"] == "shipped" else "red"
    cached = sum(s["cached"] for s in report["stages"])
    console.print(f"verdict: [{color}]{report['verdict']}[/{color}]  release: {release}  "
                  f"({report['wall_s']:.0f} s; {cached}/{len(report['stages'])} stages from the cache)")
    return report


def _build(cfg: ShipConfig, cache, work: Path, name: str, log) -> dict:
    from lifecycle.align.methods import lookup, method as align_method
    from lifecycle.artifact import code_version, sha256_file
    from lifecycle.config import to_dict
    from lifecycle.data.load import SFT_FIELDS
    from lifecycle.loading import setup_torch
    from lifecycle.models import resolve
    from lifecycle.release.cache import digest
    from lifecycle.release.stages import Runner, bench_metrics
    from lifecycle.train import merge, sft

    setup_torch(cfg.threads, cfg.seed)
    run = Runner(cfg, cache, work, log)
    base = resolve(cfg.base)
    common = {"threads": cfg.threads, "seed": cfg.seed}
    method = align_method(cfg.align["method"])

    trained = run.pretrain(base, cfg.pretrain) if cfg.pretrain else base  # what SFT starts from

    sft_data, sft_in = run.data("sft", cfg.data["sft"], SFT_FIELDS, int(cfg.data["n_sft"]))
    pref_spec = cfg.data["pref"] or method.builtin_data
    if method.paired:
        pref_data, pref_in = run.data("pref", pref_spec, method.fields, int(cfg.data["n_pref"]))
    else:  # KTO labels and RL prompts are read by the method itself
        pref_data = pref_spec
        src = Path(pref_spec).expanduser()
        pref_in = {"data-pref": digest({"spec": pref_spec, "n": cfg.data["n_pref"], "seed": cfg.seed,
                                        "sha256": sha256_file(src) if src.is_file() else None})}

    sft_art = run.train("sft", "sft", sft.SFTConfig, sft.run,
                        {**common, **cfg.sft, "model": str(trained.path), "data": sft_data},
                        {"base": trained.manifest_sha256, **sft_in})
    cls, fn = lookup(cfg.align["method"])
    fields = {k: v for k, v in cfg.align.items() if k != "method"}
    if not method.paired:
        fields.setdefault("n_examples", int(cfg.data["n_pref"]))
    align_art = run.train("align", "align", cls, fn, {**common, **fields, "model": str(sft_art.path),
                                                      "data": pref_data},
                          {"policy": sft_art.manifest_sha256, **pref_in})
    merged = run.train("merge", "merged", merge.MergeConfig, merge.run,
                       {"threads": cfg.threads, **cfg.merge, "model": str(align_art.path)},
                       {"adapter": align_art.manifest_sha256})

    arts = {"merged": merged}
    try:
        for fmt, options in cfg.formats.items():
            arts[fmt] = run.quantize(merged, fmt, options)
    finally:
        run.close()

    evals = {"base": run.eval("base", base)} if cfg.eval["base"] else {}
    for art_name, art in arts.items():
        evals[art_name] = run.eval(art_name, art)
    benches = {n: run.bench(n, a) for n, a in arts.items()} if cfg.bench["enabled"] else {}
    deploy = run.deploy(cfg.serve, arts[cfg.serve]) if cfg.deploy["enabled"] else None

    metrics = {}
    for art_name, art in arts.items():
        found = dict(evals[art_name]["metrics"])
        if art_name in benches:
            found.update(bench_metrics(benches[art_name]))
        found.update({f"parity/{k}": v for k, v in art.metrics.items()
                      if k in ("top1_agreement", "mean_kl", "greedy_agreement", "nll_delta")
                      and isinstance(v, (int, float))})
        if deploy and art_name == cfg.serve:
            found.update({f"deploy/{k}": v for k, v in deploy["loadtest"].items() if isinstance(v, (int, float))})
        metrics[art_name] = found
    disabled = {s for s in ("bench", "deploy") if not getattr(cfg, s)["enabled"]}
    gates, failed = decide(cfg.gates, metrics, disabled)
    if deploy:
        for check in deploy["slo"]:
            gates.append({"artifact": "deploy", "rule": f"loadtest {check['rule']}", "metric": check["rule"],
                          "value": check["measured"], "threshold": None, "passed": check["passed"], "reason": "",
                          "by": None})
            if not check["passed"]:
                failed.append(f"deploy: loadtest {check['rule']}: measured {_num(check['measured'])}")
    verdict = "refused" if failed else "shipped"
    return {
        "schema": SCHEMA, "release": name,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(), "wall_s": None, "config": to_dict(cfg), "verdict": verdict,
        "artifact": f"artifacts/{cfg.serve}", "stages": run.records,
        "artifacts": _artifact_table(arts, evals, benches),
        "base": {"spec": cfg.base, "path": str(base.path), "manifest_sha256": base.manifest_sha256,
                 "eval": evals.get("base", {}).get("metrics")},
        "training": {**({"pretrain": "artifacts/pretrain/train_log.json"} if cfg.pretrain else {}),
                     "sft": "artifacts/sft/train_log.json", "align": "artifacts/align/train_log.json"},
        "gates": gates, "failed": failed, "deploy": deploy,
    }


def _artifact_table(arts: dict, evals: dict, benches: dict) -> dict:
    """Per artifact: format, runtime, size, parity vs merged, eval and bench results (release.json)."""
    from quantize import format_spec

    table = {}
    for art_name, art in arts.items():
        table[art_name] = {
            "path": f"artifacts/{art_name}", "format": art.format,
            "runtime": "torch (transformers)" if art_name == "merged" else format_spec(art_name).runtime,
            "manifest_sha256": art.manifest_sha256, "size_bytes": art.size_bytes(),
            "parent": None if art_name == "merged" else "merged",
            "parity": {} if art_name == "merged" else {k: v for k, v in art.metrics.items()
                                                        if not isinstance(v, (dict, list))},
            "eval": evals[art_name]["metrics"], "bench": benches.get(art_name)}
    return table


def _write_outputs(work: Path, report: dict) -> None:
    """release.json, then the model card and report.html that read it."""
    from lifecycle.atomic import write_json_atomic
    from lifecycle.release.card import write_card
    from lifecycle.release.report import write_report

    write_json_atomic(work / "release.json", report)
    write_card(work)
    write_report(work)


def main(config: Optional[Path], output: Optional[Path], sets: Optional[list[str]], overwrite: bool) -> str:
    from lifecycle.config import build

    cfg = build(ShipConfig, config, None, sets)
    release = output or Path("releases") / _dt.datetime.now().strftime("release-%Y%m%d-%H%M%S")
    return run(cfg, release, overwrite)["verdict"]
