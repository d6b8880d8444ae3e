"""Benchmark pretraining on a large corpus: the corpus streams from disk, so memory does not grow with its size.

    python benchmarks/pretrain_corpus.py                            # makes /tmp/pretrain-corpus-1gb.jsonl once
    python benchmarks/pretrain_corpus.py --corpus my.jsonl --pack-mb 100 --steps 20

Each phase runs in its own process, so each peak RSS (`ru_maxrss`) is that phase's alone:
- open: stream the whole corpus from the start to its first packed block (nothing is read ahead);
- pack: documents -> held-out split -> tokenize -> EOS-joined fixed blocks, over the first `--pack-mb` MB;
- pack-all (with `--full`): the same over the whole corpus;
- train: `lifecycle pretrain --model tiny-arith --data CORPUS` for `--steps` steps of 8 blocks, as the CLI
  runs it (tokens/s is the training loop's; the held-out perplexity before and after is measured but not shown).
The same phases on a 10 MB slice of the corpus show whether memory follows corpus size. The corpus is made
here (no download): JSONL documents of a few hundred pseudo-words with digits, 2-3 KB each.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LIFECYCLE_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_corpus(path: Path, size_mb: int, seed: int = 0) -> None:
    """JSONL documents until the file holds `size_mb` MB; written to a temp name, then renamed."""
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ren", "tu", "sa", "vel", "dor", "pi", "an", "qu", "est", "or", "ni", "bal", "cre"]
    vocab = sorted({"".join(rng.choice(syll) for _ in range(rng.randint(1, 3))) for _ in range(3000)})
    sentences = [" ".join(rng.choice(vocab) for _ in range(rng.randint(6, 16))).capitalize()
                 + f" {rng.randint(0, 999)}." for _ in range(20000)]
    target = size_mb * 2**20
    tmp = path.with_name(path.name + ".tmp")
    written = 0
    with open(tmp, "w", encoding="utf-8") as f:
        while written < target:
            doc = " ".join(rng.choices(sentences, k=rng.randint(20, 40)))
            line = json.dumps({"text": doc}) + "\n"
            f.write(line)
            written += len(line)
    tmp.rename(path)


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def phase(name: str, corpus: str, pack_mb: int, steps: int, seq_len: int) -> dict:
    """One phase in this process; returns its figures."""
    from lifecycle.models import resolve
    from lifecycle.train import corpus as C
    from lifecycle.train.tokenizer import load_tokenizer

    tok = load_tokenizer(resolve("tiny-arith").path)
    t0 = time.perf_counter()
    if name == "open":
        train, _ = C.split(C.documents(corpus), 20)
        first = C.take_blocks(C.pack(train, tok, seq_len), 1)
        return {"blocks": len(first), "tokens": seq_len * len(first), "wall_s": time.perf_counter() - t0}
    if name in ("pack", "pack-all"):
        train, _ = C.split(C.documents(corpus), 20)
        if name == "pack":  # about pack_mb of documents, estimated from the first 200
            sizes = [len(r["text"]) for r in islice(iter(C.documents(corpus)), 200)]
            train = train.take(int(pack_mb * 2**20 / (sum(sizes) / len(sizes))))
        chars = [0]

        def counted(row):
            chars[0] += len(row["text"])
            return row

        blocks = sum(1 for _ in C.pack(train.map(counted), tok, seq_len))
        wall = time.perf_counter() - t0
        return {"blocks": blocks, "tokens": blocks * seq_len, "mb": round(chars[0] / 2**20, 1), "wall_s": wall}
    if name == "train":
        from lifecycle.config import from_dict
        from lifecycle.train.pretrain import PretrainConfig, run

        out = Path(tempfile.mkdtemp(prefix="pretrain-bench-")) / "cpt"
        cfg = from_dict(PretrainConfig, {"model": "tiny-arith", "data": corpus, "max_steps": steps, "batch_size": 8,
                                         "seq_len": seq_len, "eval_blocks": 16, "save_steps": 10**6,
                                         "shuffle_buffer": 1000})
        run(cfg, out)
        m = json.loads((out / "manifest.json").read_text())["metrics"]
        return {"tokens": m["train_tokens"], "wall_s": m["train_wall_s"], "tokens_per_s": m["tokens_per_s"]}
    raise SystemExit(f"unknown phase {name}")


def run_phase(name: str, corpus: str, args) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--corpus", corpus, "--pack-mb", str(args.pack_mb),
           "--steps", str(args.steps), "--seq-len", str(args.seq_len)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"phase {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def slice_corpus(src: Path, mb: int) -> Path:
    dst = src.with_name(f"{src.stem}-{mb}mb.jsonl")
    if not dst.exists():
        with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as g:
            size = 0
            for line in f:
                g.write(line)
                size += len(line)
                if size >= mb * 2**20:
                    break
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default="", help="a corpus to use (default: make a synthetic one under /tmp)")
    ap.add_argument("--size-mb", type=int, default=1024, help="size of the synthetic corpus")
    ap.add_argument("--pack-mb", type=int, default=50, help="MB of documents the pack phase tokenizes")
    ap.add_argument("--steps", type=int, default=10, help="training steps in the train phase")
    ap.add_argument("--seq-len", type=int, default=256, help="block length in tokens")
    ap.add_argument("--full", action="store_true", help="also pack the whole corpus (minutes per GB)")
    ap.add_argument("--phase", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
        result = phase(args.phase, args.corpus, args.pack_mb, args.steps, args.seq_len)
        print(json.dumps({**result, "peak_rss_mb": _peak_mb()}))
        return

    corpus = Path(args.corpus) if args.corpus else Path(tempfile.gettempdir()) / f"pretrain-corpus-{args.size_mb}mb.jsonl"
    if not corpus.exists():
        t0 = time.perf_counter()
        make_corpus(corpus, args.size_mb)
        print(f"made {corpus} ({corpus.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - t0:.0f} s")
    small = slice_corpus(corpus, 10)
    big_mb = corpus.stat().st_size / 2**20
    rows = []
    plan = [("open", small), ("open", corpus), ("pack", small), ("pack", corpus), ("train", small), ("train", corpus)]
    if args.full:
        plan.append(("pack-all", corpus))
    for name, path in plan:
        r = run_phase(name, str(path), args)
        tok_s = r.get("tokens_per_s") or r["tokens"] / max(r["wall_s"], 1e-9)
        rows.append([name, f"{path.stat().st_size / 2**20:.0f} MB", str(r.get("mb", "-")), f"{r['tokens']:,}",
                     f"{r['wall_s']:.1f}", "-" if name == "open" else f"{tok_s:,.0f}", f"{r['peak_rss_mb']:.0f}"])
        print(f"  {name} on {path.name}: {r}", file=sys.stderr)
    head = ["phase", "corpus", "MB of text packed", "tokens", "wall s", "tokens/s", "peak RSS MB"]
    print(f"\ncorpus {corpus} ({big_mb:.0f} MB), seq_len {args.seq_len}, {os.cpu_count()} CPUs, "
          f"torch threads <= 2\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
