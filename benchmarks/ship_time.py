"""Time `lifecycle ship` on the built-in default: a cold run, a re-run with nothing changed, a gate-only
change, and a one-format change, all in one fresh stage cache. Prints one table.

    python benchmarks/ship_time.py                     # the default release (configs/ship-default.yaml)
    python benchmarks/ship_time.py --config my.yaml --keep /tmp/ship-bench

Each run is the real CLI in a subprocess (imports included), timed wall-clock; the stage counts come
from each release's release.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = [
    ("cold (empty cache)", []),
    ("re-run, nothing changed", []),
    ("gates changed only", ["--set", "gates.all=[addition/exact_match >= 0.99]"]),
    ("one format's option changed", ["--set", "formats.gguf-q8_0={parity_prompts: 16}"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="", help="release config (default: the built-in default)")
    ap.add_argument("--keep", default="", help="work here and keep the releases (default: a temp dir, removed)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="ship-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LIFECYCLE_HOME": str(work / "home"), "LIFECYCLE_NO_PROGRESS": "1"}
    base = [sys.executable, "-m", "lifecycle.cli", "ship"] + (["--config", str(Path(args.config).resolve())]
                                                            if args.config else [])
    rows = []
    try:
        for i, (label, extra) in enumerate(RUNS):
            t0 = time.perf_counter()
            proc = subprocess.run(base + ["-o", f"r{i}", *extra], cwd=work, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            rel_path = work / f"r{i}" / "release.json"
            if not rel_path.is_file():
                sys.exit(f"{label}: ship failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
            rel = json.loads(rel_path.read_text())
            ran = [f"{s['stage']}{'/' + s['target'] if s['target'] else ''}" for s in rel["stages"] if not s["cached"]]
            rows.append((label, wall, len(rel["stages"]) - len(ran), len(rel["stages"]), rel["verdict"],
                         ", ".join(ran) if len(ran) <= 4 else f"{len(ran)} stages"))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n`lifecycle ship` timings ({os.cpu_count()} CPUs; wall clock, CLI start to exit)\n")
    print("| run | wall s | stages from cache | verdict | stages run |")
    print("|---|---:|---:|---|---|")
    for label, wall, hit, total, verdict, ran in rows:
        print(f"| {label} | {wall:.1f} | {hit}/{total} | {verdict} | {ran or '-'} |")


if __name__ == "__main__":
    main()
