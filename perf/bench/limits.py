"""The physical limit for decode: memory bandwidth, and the bytes of weights each token reads.

At batch size 1 every decoded token reads every weight once, so tokens/s x weight bytes is the memory
traffic achieved, and the machine's bandwidth bounds it (gpt-fast prints the same figure). With
batching one read serves a whole batch, so at concurrency > 1 the "achieved" figure can pass the bound;
that excess is what batching buys. A model that fits in CPU cache (the built-in one: 2.7 MB) is bound
by compute and overheads long before DRAM bandwidth.
"""

from __future__ import annotations

import time
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".onnx.data", ".data")


def memory_bandwidth_gbs(mb: int = 256, repeats: int = 5) -> float:
    """Best-of-`repeats` copy of an `mb`-MB array; counts read + write bytes (STREAM's copy convention)."""
    import numpy as np

    src = np.ones(mb * 1024 * 1024 // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch pages first
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def weight_bytes(path: str | Path) -> int:
    """Bytes of weight files in an artifact folder (all files when none look like weights)."""
    files = [p for p in Path(path).rglob("*") if p.is_file()]
    weights = [p for p in files if p.name.endswith(WEIGHT_SUFFIXES) and "optimizer" not in p.name
               and "training_args" not in p.name]
    return sum(p.stat().st_size for p in (weights or files))


def achieved_gbs(weight_bytes_: int, output_tok_s: float) -> float:
    return weight_bytes_ * output_tok_s / 1e9
