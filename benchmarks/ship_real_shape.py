"""`lifecycle ship` on a random checkpoint of the real Qwen2.5-0.5B shape, with wall time and peak RSS per stage.

    python benchmarks/ship_real_shape.py                      # configs/ship-chat.yaml, its step caps
    python benchmarks/ship_real_shape.py --out /tmp/q05 --set sft.max_steps=10

The checkpoint has Qwen2.5-0.5B's shape (24 layers, hidden 896, 14 heads / 2 KV heads, 151,936 vocabulary,
tied, bf16: 494M parameters) with random weights and Qwen's real tokenizer and stock template
(tests/families.py). The release is configs/ship-chat.yaml on the example chat data: SFT (LoRA), DPO,
merge, gguf-q4_k_m, onnx-int4, int8, eval (generic tasks), bench. Per-stage peak RSS is sampled by the
ship runner itself (this process and its children, 5 Hz; release.json `rss_peak_mb`); the whole run's peak
comes from the kernel (`ru_maxrss` of the ship subprocess). The figures measure cost, not quality: the
weights are random. Goal from the issue: under 30 minutes and 8 GiB on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="extra ship --set overrides")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="ship-real-shape-"))
    base = out / "qwen2.5-0.5b-random"
    if not (base / "model.safetensors").is_file():
        from families import make_checkpoint

        t0 = time.perf_counter()
        make_checkpoint("qwen2", base, shape="qwen2.5-0.5b")
        print(f"checkpoint: {time.perf_counter() - t0:.0f} s, {base}", file=sys.stderr)
    env = {**os.environ, "LIFECYCLE_HOME": str(out / "home"), "LIFECYCLE_NO_PROGRESS": "1",
           "OMP_NUM_THREADS": str(args.threads)}
    release = out / "release"
    cmd = [sys.executable, "-m", "lifecycle.cli", "ship", "--config", str(ROOT / "configs" / "ship-chat.yaml"),
           "--set", f"base={base}", "--set", f"data.sft={ROOT / 'examples/chat/sft.jsonl'}",
           "--set", f"data.pref={ROOT / 'examples/chat/pref.jsonl'}", "--set", f"threads={args.threads}",
           "-o", str(release), "--overwrite", *sum((["--set", s] for s in args.set), [])]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=out, stdout=open(out / "ship.log", "w"), stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"ship exit {proc.returncode}; wall {wall / 60:.1f} min; peak RSS {peak_gib:.2f} GiB; log {out / 'ship.log'}")
    rel_path = release / "release.json"
    if not rel_path.is_file():
        sys.exit(1)
    rel = json.loads(rel_path.read_text())
    print(f"verdict: {rel['verdict']}  ({len(rel['stages'])} stages)\n")
    print("| stage | target | wall s | peak RSS MB |")
    print("|---|---|---:|---:|")
    for s in rel["stages"]:
        print(f"| {s['stage']} | {s['target'] or ''} | {s['wall_s']:.1f} | {s.get('rss_peak_mb') or ''} |")
    print(f"| **total** | | **{wall:.0f}** | **{peak_gib * 1024:.0f}** (whole run, kernel) |")
    (out / "summary.json").write_text(json.dumps({"wall_s": round(wall, 1), "peak_rss_gib": round(peak_gib, 3),
                                                 "verdict": rel["verdict"], "stages": rel["stages"]}, indent=1))


if __name__ == "__main__":
    main()
