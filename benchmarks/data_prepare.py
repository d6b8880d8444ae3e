"""Benchmark `lifecycle data prepare` on a synthetic corpus: throughput and peak memory, MinHash dedup on.

    python benchmarks/data_prepare.py                     # 100k alpaca records, default PrepareConfig
    python benchmarks/data_prepare.py --n 20000 --tracemalloc

The corpus is made here (no download): alpaca records of 40-100 words, with 5% exact duplicates, 5%
near-duplicates (one word changed) and 0.1% malformed lines, so every stage of the pipeline has work.
Peak memory is the process's max RSS (`resource.getrusage`, includes Python and the imported libraries);
`--tracemalloc` adds the peak of Python allocations during prepare, at a cost in speed. CPU seconds are
printed beside wall time because a shared machine can stretch wall time several-fold.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LIFECYCLE_NO_PROGRESS", "1")


def make_corpus(path: Path, n: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ren", "tu", "sa", "vel", "dor", "pi", "an", "qu", "est", "or", "ni", "bal", "cre"]
    vocab = sorted({"".join(rng.choice(syll) for _ in range(rng.randint(2, 4))) for _ in range(4000)})
    planted = {"exact": 0, "near": 0, "malformed": 0}
    previous: list[dict] = []
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            r = rng.random()
            if r < 0.001:
                f.write('{"instruction": "broken\n')
                planted["malformed"] += 1
                continue
            if r < 0.051 and previous:
                rec = dict(rng.choice(previous))
                planted["exact"] += 1
            elif r < 0.101 and previous:
                rec = dict(rng.choice(previous))
                words = rec["output"].split()
                words[rng.randrange(len(words))] = "zeppelin"
                rec["output"] = " ".join(words)
                planted["near"] += 1
            else:
                rec = {"instruction": " ".join(rng.choice(vocab) for _ in range(rng.randint(8, 20))) + "?",
                       "input": "",
                       "output": " ".join(rng.choice(vocab) for _ in range(rng.randint(30, 80))) + "."}
                if len(previous) < 5000:
                    previous.append(rec)
                else:
                    previous[rng.randrange(5000)] = rec
            f.write(json.dumps(rec) + "\n")
    return planted


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="records in the corpus")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-hf", action="store_true", help="skip the HF save_to_disk step")
    ap.add_argument("--tracemalloc", action="store_true", help="also measure peak Python allocations (slower)")
    args = ap.parse_args()

    from lifecycle.data.prepare import PrepareConfig, run

    with tempfile.TemporaryDirectory() as work:
        corpus = Path(work) / "corpus.jsonl"
        t0 = time.perf_counter()
        planted = make_corpus(corpus, args.n, args.seed)
        gen_s = time.perf_counter() - t0
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cfg = PrepareConfig(inputs=[str(corpus)], dedup_near=True, save_hf=not args.no_hf)
        if args.tracemalloc:
            import tracemalloc

            tracemalloc.start()
        t0, cpu0 = time.perf_counter(), _cpu()
        out = run(cfg, Path(work) / "ds")
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        traced = None
        if args.tracemalloc:
            traced = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        report = json.loads((out / "report.json").read_text())
        result = {
            "records": args.n, "corpus_mb": round(corpus.stat().st_size / 2**20, 1),
            "planted": planted, "read": report["read"], "kept": report["kept"],
            "dropped_by_reason": report["dropped_by_reason"],
            "prepare_s": round(wall, 2), "records_per_s": round(args.n / wall),
            "prepare_cpu_s": round(cpu, 2), "records_per_cpu_s": round(args.n / cpu),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_before_prepare_mb": round(rss_before),
            "tracemalloc_peak_mb": round(traced, 1) if traced is not None else None,
            "corpus_gen_s": round(gen_s, 2),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
            "minhash": {"num_perm": cfg.num_perm, "ngram": cfg.ngram, "threshold": cfg.near_threshold},
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
