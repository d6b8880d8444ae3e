"""Tiny artifacts of every engine kind for the engine-contract tests (logprobs, chat tokens, JSON output).

    from engine_kinds import engine_of                 # tests/ is on sys.path under pytest
    engine = engine_of("gguf-f16", tmp_root, base)     # hf, int8, gptq, gguf-f16, onnx; made once per process

Each format is made from the built-in tiny-arith (quantize with no evaluation) the first time it is asked
for, then kept for the rest of the process, so several test modules share one conversion.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

KINDS = {"hf": None, "int8": "torchao", "gptq": "gptqmodel", "gguf-f16": "llama_cpp", "onnx": "onnxruntime_genai"}
EXTRA_SETS = {"gptq": ["samples=16"]}  # calibration on 16 sums: about 10 s
_MADE: dict[str, object] = {}


def available(kind: str) -> bool:
    module = KINDS[kind]
    return module is None or importlib.util.find_spec(module) is not None


def engine_of(kind: str, root: Path, base):
    """A loaded engine of `kind` over tiny-arith (the hf one is the base itself)."""
    if kind not in _MADE:
        from lifecycle.engine import load_engine

        if kind == "hf":
            _MADE[kind] = load_engine(base)
        else:
            from quantize.driver import quantize

            sets = ["eval_items=0", "parity_prompts=1", "threads=1"] + EXTRA_SETS.get(kind, [])
            path = quantize(base.path, kind, Path(root) / kind, sets)
            _MADE[kind] = load_engine(str(path), threads=1)
    return _MADE[kind]
