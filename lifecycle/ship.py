"""`lifecycle ship`: the release command. SFT -> DPO -> merge, evaluated after every stage, then gated.

    lifecycle ship                                  # the built-in default, into releases/<timestamp>
    lifecycle ship --config configs/ship-default.yaml --output releases/r1

The release directory holds the stage artifacts under `artifacts/` and `release.json`: every stage with
its artifact, manifest sha256, wall time and metrics, the gate results and the `verdict` (`shipped` or
`refused`). Each artifact is written atomically; `release.json` is written last, so a release directory
without it is incomplete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from lifecycle.config import field
from lifecycle.errors import UserError


@dataclass
class ShipConfig:
    base: str = field("tiny-arith", help="base model: built-in name, store name or hf artifact path")
    sft: dict = field({}, help="SFTConfig fields for the SFT stage, e.g. {max_steps: 300, method: lora}")
    dpo: dict = field({}, help="DPOConfig fields for the DPO stage, e.g. {beta: 0.1}")
    merge: dict = field({}, help="MergeConfig fields, e.g. {tolerance: 0.001}")
    eval_items: int = field(200, help="held-out sums evaluated after each stage")
    gates: dict = field({"exact_match_min": 0.9}, help="release gates on the merged model: exact_match_min, verbose_rate_max")
    threads: int = field(2, help="torch threads for every stage")
    seed: int = field(0, help="seed for every stage")

    def __post_init__(self) -> None:
        known = {"exact_match_min", "verbose_rate_max"}
        unknown = set(self.gates) - known
        if unknown:
            raise UserError(f"unknown gate(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")


STAGE_METRICS = ("exact_match", "verbose_rate", "raw_exact_match", "reward_accuracy", "reward_margin", "train_loss",
                 "merge_parity")


def decide(metrics: dict, gates: dict) -> tuple[list[dict], str]:
    """Evaluate gates (pure function of metrics): one row per rule, and the verdict."""
    rows = []
    for rule, threshold in gates.items():
        metric, bound = rule.rsplit("_", 1)
        value = metrics.get(metric)
        passed = value is not None and (value >= threshold if bound == "min" else value <= threshold)
        rows.append({"rule": rule, "metric": metric, "threshold": threshold, "value": value, "passed": passed,
                     "by": None if value is None else round(value - threshold, 6)})
    return rows, ("shipped" if all(r["passed"] for r in rows) else "refused")


def _stage_cfg(cls, base: dict, user: dict):
    from lifecycle.config import from_dict

    return from_dict(cls, {**base, **user})


def run(cfg: ShipConfig, release: Path) -> dict:
    import datetime as _dt
    import shutil
    import time

    from rich.console import Console

    from lifecycle.align import dpo
    from lifecycle.artifact import Artifact, write_json_atomic, code_version
    from lifecycle.config import to_dict
    from lifecycle.engine import load_engine
    from lifecycle.eval.arith import chat_eval, raw_eval
    from lifecycle.models import resolve
    from lifecycle.train import merge, sft
    from lifecycle.train.common import setup_torch

    console = Console()
    release = release.expanduser().resolve()
    if release.exists():
        shutil.rmtree(release)  # main() already refused an existing release without --overwrite
    arts = release / "artifacts"
    arts.mkdir(parents=True)
    common = {"threads": cfg.threads, "seed": cfg.seed, "eval_items": cfg.eval_items}
    stages: list[dict] = []

    def record(name: str, art: Artifact, wall: float, metrics: dict) -> None:
        inside = art.path.is_relative_to(release)
        stages.append({"stage": name, "artifact": str(art.path.relative_to(release)) if inside else str(art.path),
                       "format": art.format, "manifest_sha256": art.manifest_sha256, "wall_s": round(wall, 1),
                       "metrics": {k: metrics[k] for k in STAGE_METRICS if k in metrics}})
        m = stages[-1]["metrics"]
        console.print(f"[bold]{name}[/bold]: exact_match={m.get('exact_match')} verbose_rate={m.get('verbose_rate')} "
                      f"({wall:.0f}s)")

    # Each artifact is written atomically in place, so lineage paths stay valid; release.json is written
    # last and its presence marks a complete release.
    setup_torch(cfg.threads, cfg.seed)
    base = resolve(cfg.base)
    t = time.time()
    engine = load_engine(base)
    base_metrics = {**chat_eval(engine, n=cfg.eval_items), **raw_eval(engine, n=cfg.eval_items)}
    engine.close()
    record("base", base, time.time() - t, base_metrics)

    t = time.time()
    sft_cfg = _stage_cfg(sft.SFTConfig, {**common, "model": str(base.path)}, cfg.sft)
    sft_art = Artifact.load(sft.run(sft_cfg, arts / "sft"))
    record("sft", sft_art, time.time() - t, sft_art.metrics)

    t = time.time()
    dpo_cfg = _stage_cfg(dpo.DPOConfig, {**common, "model": str(sft_art.path)}, cfg.dpo)
    dpo_art = Artifact.load(dpo.run(dpo_cfg, arts / "dpo"))
    record("dpo", dpo_art, time.time() - t, dpo_art.metrics)

    t = time.time()
    merge_cfg = _stage_cfg(merge.MergeConfig, {"threads": cfg.threads, "eval_items": cfg.eval_items,
                                               "model": str(dpo_art.path)}, cfg.merge)
    merged = Artifact.load(merge.run(merge_cfg, arts / "merged"))
    record("merge", merged, time.time() - t, merged.metrics)

    gates, verdict = decide(merged.metrics, cfg.gates)
    report = {
        "release": release.name,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "config": to_dict(cfg),
        "stages": stages,
        "gates": gates,
        "verdict": verdict,
        "artifact": "artifacts/merged",
    }
    write_json_atomic(release / "release.json", report)
    for g in gates:
        mark = "[green]pass[/green]" if g["passed"] else "[red]FAIL[/red]"
        console.print(f"gate {g['rule']} {g['threshold']}: value {g['value']} {mark}")
    color = "green" if verdict == "shipped" else "red"
    console.print(f"verdict: [{color}]{verdict}[/{color}]  release: {release}")
    return report


def main(config: Optional[Path], output: Optional[Path], sets: Optional[list[str]], overwrite: bool) -> str:
    import datetime as _dt

    from lifecycle.config import build

    cfg = build(ShipConfig, config, None, sets)
    release = output or Path("releases") / _dt.datetime.now().strftime("release-%Y%m%d-%H%M%S")
    if release.exists() and not overwrite:
        raise UserError(f"{release} already exists; choose another --output or pass --overwrite")
    return run(cfg, release)["verdict"]
