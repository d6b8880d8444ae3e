"""Every stage on every real-family fixture: a family x stage table of pass (with seconds) or the refusal.

    python benchmarks/family_matrix.py                          # qwen2, llama3, mistral, phi3; all stages
    python benchmarks/family_matrix.py --families llama3 --out /tmp/fm

The fixtures are tiny random-weight checkpoints with each family's real vocabulary, special tokens, chat
template and dtype (tests/families.py). Stages run in-process, one thread, on the example chat data
(examples/chat): SFT with each method, every align method and `reward` on the LoRA SFT, `merge`, every
quantize format on the merged model, `eval` on the generic tasks, `serve` (a real `lifecycle serve`
subprocess with the generic smoke test: status 200, stream == non-stream, Chinese; not whether the random
weights' reply has content) and `bench`. A cell is the
wall time of a stage that ran and wrote its artifact, `refused: ...` for a one-line UserError (a property
that rules it out), or `FAIL: ...` for anything else. Prints a Markdown table and writes matrix.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("LIFECYCLE_NO_PROGRESS", "1")

DATA = ROOT / "examples" / "chat"
QUICK = dict(max_steps=3, batch_size=4, max_length=96, threads=1)
ALIGN_DATA = {"pairs": "pref.jsonl", "unpaired": "kto.jsonl", "prompts": "prompts.jsonl"}
RL = {"reward": ["concise"], "num_generations": 2, "max_completion_length": 8}


def cell(fn):
    """(text, ok): seconds, a refusal or a failure, and whether the stage produced what the next one needs."""
    from lifecycle.errors import UserError

    t0 = time.perf_counter()
    try:
        fn()
    except UserError as e:
        return f"refused: {str(e)[:140]}", False
    except Exception as e:  # noqa: BLE001 - the matrix reports every failure
        traceback.print_exc()
        return f"FAIL: {type(e).__name__}: {str(e)[:100]}", False
    return f"{time.perf_counter() - t0:.1f} s", True


def family_row(family: str, out: Path) -> dict[str, str]:
    from families import make_checkpoint

    from lifecycle.align import reward
    from lifecycle.align.methods import METHODS, lookup
    from lifecycle.config import from_dict
    from lifecycle.train import merge, sft
    from quantize import FORMATS
    from quantize.driver import quantize

    base = make_checkpoint(family, out / "base")
    row: dict[str, str] = {}
    for method in ("lora", "dora", "qlora", "full"):
        row[f"sft {method}"], _ = cell(lambda m=method: sft.run(sft.SFTConfig(
            model=str(base), data=str(DATA / "sft.jsonl"), method=m, **QUICK), out / f"sft-{m}"))
    adapter = out / "sft-lora"
    for name, entry in METHODS.items():
        cls, run = lookup(name)
        fields = {"model": str(adapter), "data": str(DATA / ALIGN_DATA[entry.data]), **QUICK, "max_steps": 2,
                  **(RL if entry.data == "prompts" else {})}
        row[f"align {name}"], _ = cell(lambda c=cls, r=run, f=fields, n=name: r(from_dict(c, f), out / f"align-{n}"))
    row["reward"], _ = cell(lambda: reward.run(reward.RewardConfig(
        model=str(adapter), data=str(DATA / "pref.jsonl"), method="lora", **QUICK), out / "reward"))
    merged = out / "merged"
    row["merge"], merged_ok = cell(lambda: merge.run(merge.MergeConfig(model=str(out / "align-dpo"), threads=1),
                                                     merged))
    if not merged_ok:
        return row
    cache: dict = {}
    for fmt in FORMATS:
        row[fmt], _ = cell(lambda f=fmt: quantize(merged, f, out / f, options={"parity_prompts": 4, "threads": 1},
                                                  parent_cache=cache))
    if cache.get("engine") is not None:
        cache["engine"].close()
    row["eval"], _ = cell(lambda: run_eval(merged))
    row["serve"], _ = cell(lambda: serve_smoke(merged, out))
    row["bench"], _ = cell(lambda: run_bench(merged))
    return row


def run_eval(path: Path) -> None:
    from lifecycle.engine import load_engine
    from lifecycle.eval.runner import run_tasks
    from lifecycle.eval.tasks import resolve_tasks

    tasks = resolve_tasks(["generic-mc", "generic-ppl", "ifeval-generic"])
    engine = load_engine(str(path), threads=1)
    try:
        run_tasks(tasks, engine)
    finally:
        engine.close()


def serve_smoke(path: Path, out: Path) -> None:
    from lifecycle.errors import UserError
    from lifecycle.release.deploy import smoke_test
    from perf.bench.runner import BenchConfig, Server

    server = Server("model", str(path), BenchConfig(models=[str(path)], bandwidth=False, output=""), out)
    try:
        server.wait_ready(180)
        found = smoke_test(server.url, "model", profile="generic")
    finally:
        server.stop()
    checks = dict(found.get("checks") or {})
    # the serving path is what this cell tests: status, stream == non-stream, Chinese in and out. A random-weight
    # model may greedily answer only whitespace; that fails the release smoke test, but says nothing of serving.
    checks.pop("reply", None)
    if found.get("status") != 200 or not checks or not all(checks.values()):
        raise UserError(f"smoke test failed: {found.get('checks') or found.get('error')}")


def run_bench(path: Path) -> None:
    from lifecycle.errors import UserError
    from perf.bench.runner import BenchConfig, run

    found = run(BenchConfig(models=[str(path)], concurrency=[1, 2], num_prompts=6, bandwidth=False, output=""),
                progress=lambda m: None)["targets"][0]
    if found.get("errors"):
        raise UserError(f"bench: {found['errors']} request errors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default="qwen2,llama3,mistral,phi3")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="family-matrix-"))
    os.environ.setdefault("LIFECYCLE_HOME", str(out / "home"))
    import torch

    torch.set_num_threads(1)
    rows = {}
    for family in args.families.split(","):
        t0 = time.perf_counter()
        rows[family] = family_row(family, out / family)
        print(f"{family}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    stages = list(next(iter(rows.values())))
    print("| stage | " + " | ".join(rows) + " |")
    print("|---|" + "---|" * len(rows))
    for stage in stages:
        print(f"| {stage} | " + " | ".join(rows[f].get(stage, "-") for f in rows) + " |")
    (out / "matrix.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    print(f"\nwrote {out / 'matrix.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
