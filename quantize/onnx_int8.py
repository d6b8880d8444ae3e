"""`onnx-int8`: weight-only int8 ONNX for onnxruntime (MatMulNBits with bits=8), run by onnxruntime-genai.

    lifecycle quantize --model runs/merged --format onnx-int8 --output runs/onnx-int8

Made by onnxruntime-genai's model builder with `-p int8` (`python -m onnxruntime_genai.models.builder
-i DIR -o OUT -p int8 -e cpu --extra_options block_size=32 accuracy_level=4`): every MatMul, the tied
lm_head included, becomes a MatMulNBits node holding int8 weights with one fp32 scale per block of
`int8_block_size` weights along a row. With `int8_accuracy_level=4` onnxruntime's CPU kernel also
quantizes the activations to int8 per block and multiplies in integers; `int8_accuracy_level=1`
dequantizes the weights to fp32 instead (closer to the parent, slower).
Embeddings, norms and attention stay fp32. The engine is onnx_genai's (same runtime, same loader).
onnxruntime 1.32's quantizer logs "Gather only supports 4 bits quantization" twice at ERROR level for
a tied embedding: harmless, the embedding Gather simply stays fp32 (the graph is checked below).

Why this path and not `onnxruntime.quantization.quantize_dynamic` on the fp32 graph: that rewrites each
MatMul into DynamicQuantizeLinear + MatMulInteger + scaling nodes with one weight scale per tensor (or per
column), while the builder writes one fused MatMulNBits node per projection with per-block scales: the
same kernel and the same graph as `onnx-int4`, only with 8-bit weights.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lifecycle.artifact import Artifact
from lifecycle.config import field
from lifecycle.errors import UserError
from quantize.driver import QuantOptions
from quantize.onnx_genai import OnnxGenAIEngine, build, check_block_size, head_size

__all__ = ["OnnxGenAIEngine", "Options", "check", "produce"]


@dataclasses.dataclass
class Options(QuantOptions):
    int8_block_size: int = field(32, help="weights per int8 scale along a row (16-256; smaller is closer to fp32, larger is smaller)")
    int8_accuracy_level: int = field(4, help="MatMulNBits compute type: 4 = int8 activations (integer matmul), 1 = fp32 (dequantize weights)")
    int8_symmetric: bool = field(True, help="signed int8 with no zero point; false stores uint8 plus a zero point per block")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.int8_block_size not in (16, 32, 64, 128, 256):
            raise UserError(f"int8_block_size must be 16, 32, 64, 128 or 256, got {self.int8_block_size}")
        if self.int8_accuracy_level not in (1, 2, 3, 4):
            raise UserError("int8_accuracy_level must be 1 (fp32), 2 (fp16), 3 (bf16) or 4 (int8), "
                            f"got {self.int8_accuracy_level}")


def check(parent: Artifact, opts: Options, name: str) -> dict:
    head = head_size(parent, name)
    check_block_size(parent, name, opts.int8_block_size, "int8_block_size")
    return {"head_size": head}


def produce(parent: Artifact, tmp: Path, opts: Options, name: str) -> dict:
    extra = [f"block_size={opts.int8_block_size}", f"accuracy_level={opts.int8_accuracy_level}",
             f"is_symmetric={str(opts.int8_symmetric).lower()}"]
    notes = build(parent, tmp, "int8", extra)
    if "8" not in notes.get("matmulnbits_bits", {}):
        raise RuntimeError(f"the model builder wrote no 8-bit MatMulNBits node (ops: {notes['onnx_ops']})")
    return notes
