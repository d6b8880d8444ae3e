"""ONNX artifacts for onnxruntime-genai: `onnx` (fp32) and `onnx-int4` (MatMulNBits, weight-only int4).

    lifecycle quantize --model runs/merged --format onnx-int4 --output runs/onnx-int4

Made with onnxruntime-genai's model builder
(`python -m onnxruntime_genai.models.builder -i DIR -o OUT -p fp32|int4|int8 -e cpu`), which writes the model,
`genai_config.json`, the tokenizer and the chat template; loaded with onnxruntime-genai's Generator. The
int8 format (`onnx-int8`) lives in `quantize/onnx_int8.py` and shares `build` and the engine below.

Shape limit: on CPU the builder always emits GroupQueryAttention, whose CPU kernel needs a head size that
is a multiple of 16 (the built-in `tiny-arith` has 16); `check` refuses other models before any work.
MatMulNBits quantizes each weight row in blocks, so the block size must divide every Linear's input width.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from lifecycle.artifact import Artifact
from lifecycle.config import field
from lifecycle.errors import UserError
from lifecycle.extras import install_hint
from quantize.driver import QuantOptions
from quantize.tokengen import TokenEngine, bounded_context, eos_ids_of, load_tokenizer


@dataclasses.dataclass
class Options(QuantOptions):
    int4_block_size: int = field(32, help="onnx-int4 only: weights per int4 scale (16-256; smaller is closer to fp32, larger is smaller)")
    int4_accuracy_level: int = field(4, help="onnx-int4 only: MatMulNBits compute type (4 = int8 activations, fastest; 1 = fp32)")


def head_size(parent: Artifact, name: str) -> int:
    """The attention head size, refused up front unless onnxruntime's CPU attention can run it."""
    cfg = json.loads((parent.path / "config.json").read_text())
    head = int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    if head % 16:
        raise UserError(f"{name}: onnxruntime's CPU GroupQueryAttention needs a head size that is a multiple of 16, "
                        f"and this model's is {head}; use a gguf-* or torch format for it")
    return head


def check_block_size(parent: Artifact, name: str, block_size: int, option: str) -> None:
    """MatMulNBits quantizes along each weight's input width in blocks: they must divide it."""
    cfg = json.loads((parent.path / "config.json").read_text())
    widths = {k: cfg[k] for k in ("hidden_size", "intermediate_size") if cfg.get(k)}
    bad = {k: v for k, v in widths.items() if v % block_size}
    if bad:
        raise UserError(f"{name}: {', '.join(f'{k} {v}' for k, v in bad.items())} not a multiple of "
                        f"{option} {block_size}; pass --set {option}=16 or 32")


def check(parent: Artifact, opts: Options, name: str) -> dict:
    head = head_size(parent, name)
    if name == "onnx-int4":
        check_block_size(parent, name, opts.int4_block_size, "int4_block_size")
    return {"head_size": head}


def build(parent: Artifact, tmp: Path, precision: str, extra: list[str]) -> dict:
    """Run the model builder in-process (its CLI is `python -m onnxruntime_genai.models.builder`) and count
    the ops it wrote; `extra` holds the builder's `--extra_options` as KEY=VALUE strings."""
    import contextlib
    import io
    import logging
    import shutil

    import onnx
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    cache = tmp.parent / f".{tmp.name}-cache"
    log = io.StringIO()
    quant_log = logging.getLogger("onnxruntime.quantization")  # logs every MatMul it quantizes at INFO
    level = quant_log.level
    quant_log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            options = parse_extra_options(None, str(parent.path), str(tmp), precision, "cpu", str(cache), extra)
            create_model(None, str(parent.path), str(tmp), precision, "cpu", str(cache), **options)
    except Exception as e:
        raise RuntimeError(f"onnxruntime-genai model builder failed: {e} (log tail: {log.getvalue()[-300:]})") from e
    finally:
        quant_log.setLevel(level)
        shutil.rmtree(cache, ignore_errors=True)
    ops: dict[str, int] = {}
    bits: dict[int, int] = {}
    for node in onnx.load(str(tmp / "model.onnx"), load_external_data=False).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        if node.op_type == "MatMulNBits":
            b = next((a.i for a in node.attribute if a.name == "bits"), 4)
            bits[b] = bits.get(b, 0) + 1
    notes = {"onnx_ops": {k: v for k, v in ops.items() if k in ("MatMul", "MatMulNBits", "GroupQueryAttention")},
             "precision": precision}
    if bits:
        notes["matmulnbits_bits"] = {str(k): v for k, v in sorted(bits.items())}
    return notes


def produce(parent: Artifact, tmp: Path, opts: Options, name: str) -> dict:
    precision = "int4" if name == "onnx-int4" else "fp32"
    extra = [f"block_size={opts.int4_block_size}", f"accuracy_level={opts.int4_accuracy_level}"] \
        if precision == "int4" else []
    return build(parent, tmp, precision, extra)


class OnnxGenAIEngine(TokenEngine):
    """onnxruntime-genai's Generator, fed one token at a time so our sampling and stop handling apply."""

    def __init__(self, model, tokenizer, artifact=None, context_length: int = 0, eos_ids=None):
        super().__init__(tokenizer, artifact, context_length=context_length, eos_ids=eos_ids)
        self.model = model
        self.gen = None

    @classmethod
    def load(cls, artifact: Artifact, threads: int = 0, context_length: int = 0) -> "OnnxGenAIEngine":
        """`context_length`: positions the Generator's KV cache holds (onnxruntime-genai allocates
        `max_length` of them up front); 0 = min(genai_config's context_length, 4096)."""
        try:
            import onnxruntime_genai as og
        except ImportError:
            raise UserError(f"ONNX needs onnxruntime-genai: {install_hint('onnxruntime_genai')}") from None
        genai = json.loads((artifact.path / "genai_config.json").read_text())["model"]
        ctx = bounded_context(context_length, int(genai.get("context_length") or 0))
        cfg = og.Config(str(artifact.path))
        cfg.clear_providers()
        n = threads or 1
        cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": n, "inter_op_num_threads": 1}}}, "search": {"max_length": ctx}}))
        eos = eos_ids_of(genai.get("eos_token_id"))
        return cls(og.Model(cfg), load_tokenizer(artifact.path), artifact, ctx, eos)

    def _new(self):
        """A Generator at length 0. Making one costs ~14 ms on CPU (measured with onnxruntime-genai 0.18;
        it was most of the time to first token), so the last one is rewound and reused (0.2 ms)."""
        import onnxruntime_genai as og

        if self.gen is not None:
            try:
                self.gen.rewind_to(0)
                return self.gen
            except (AttributeError, RuntimeError):  # an older runtime without rewind_to, or an unusable generator
                self.gen = None
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=self.context_length)
        return og.Generator(self.model, params)

    def _last(self) -> np.ndarray:
        out = np.asarray(self.gen.get_logits(), dtype=np.float32)
        return out.reshape(-1, out.shape[-1])[-1]

    def _prefill(self, ids: list[int]) -> np.ndarray:
        self.gen = self._new()
        self.gen.append_tokens(ids)
        return self._last()

    def _step(self, token: int) -> np.ndarray:
        self.gen.append_tokens([token])
        return self._last()

    def _rows(self, ids: list[int], start: int) -> Iterator[np.ndarray]:
        """The runtime returns the last position's logits only: the tokens before `start` go in at once, then
        one token per wanted row."""
        self._check_fits(ids)
        start = max(0, min(start, len(ids) - 1))
        self.gen = self._new()
        self.gen.append_tokens(ids[: start + 1])
        yield self._last()[None]
        for t in ids[start + 1:]:
            self.gen.append_tokens([t])
            yield self._last()[None]

    def logits(self, ids: list[int]) -> np.ndarray:
        return np.concatenate(list(self._rows(ids, 0)))

    def close(self) -> None:
        self.gen = None
        self.model = None
