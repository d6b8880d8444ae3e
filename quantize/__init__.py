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
    module: str  # quantize.<module>, imported on demand
    requires: tuple[str, ...]  # importable module names the format needs (checked with find_spec)
    runtime: str  # what runs it, for tables and docs


_GGUF = FormatSpec("quantize.gguf_format", ("llama_cpp", "conversion", "gguf"), "llama-cpp-python")
_ONNX = FormatSpec("quantize.onnx_genai", ("onnxruntime_genai", "onnx", "onnxruntime"), "onnxruntime-genai")

FORMATS: dict[str, FormatSpec] = {
    "gguf-f16": _GGUF,
    "gguf-q8_0": _GGUF,
    "gguf-q4_0": _GGUF,
    "gguf-q4_k_m": _GGUF,
    "int8": FormatSpec("quantize.torch_formats", ("torchao",), "torch (torchao int8 weight-only)"),
    "fp8": FormatSpec("quantize.torch_formats", ("torchao",), "torch (torchao fp8 e4m3 weight-only, emulated on CPU)"),
    "int4": FormatSpec("quantize.torch_formats", ("bitsandbytes",), "torch (bitsandbytes NF4)"),
    "gptq": FormatSpec("quantize.gptq", ("gptqmodel",), "GPTQModel (CPU kernel)"),
    "onnx": _ONNX,
    "onnx-int4": _ONNX,
    "onnx-int8": FormatSpec("quantize.onnx_int8", _ONNX.requires, "onnxruntime-genai (MatMulNBits int8)"),
}

INSTALL_HINT = "pip install torch==2.13.0 && pip install -e '.[train,quant]'"


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
        raise UserError(f"format '{name}' needs {', '.join(missing)}, which is not installed; run: {INSTALL_HINT}")
    return importlib.import_module(format_spec(name).module)
