"""ONNX artifacts for onnxruntime-genai: `onnx` (fp32) and `onnx-int4` (MatMulNBits, weight-only int4).

    lifecycle quantize --model runs/merged --format onnx-int4 --output runs/onnx-int4

Made with onnxruntime-genai's model builder
(`python -m onnxruntime_genai.models.builder -i DIR -o OUT -p fp32|int4 -e cpu`), which writes the model,
`genai_config.json`, the tokenizer and the chat template; loaded with onnxruntime-genai's Generator.

Shape limit: on CPU the builder always emits GroupQueryAttention, whose CPU kernel needs a head size that
is a multiple of 16. The built-in `tiny-arith` has head size 24, so it cannot run here; `check` says so
before any work.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from lifecycle.artifact import Artifact
from lifecycle.config import field
from lifecycle.errors import UserError
from quantize.driver import QuantOptions
from quantize.tokengen import TokenEngine, load_tokenizer


@dataclasses.dataclass
class Options(QuantOptions):
    int4_block_size: int = field(32, help="onnx-int4 only: weights per int4 scale (16-256; smaller is closer to fp32, larger is smaller)")
    int4_accuracy_level: int = field(4, help="onnx-int4 only: MatMulNBits compute type (4 = int8 activations, fastest; 1 = fp32)")


def check(parent: Artifact, opts: Options, name: str) -> dict:
    cfg = json.loads((parent.path / "config.json").read_text())
    head = int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    if head % 16:
        raise UserError(f"{name}: onnxruntime's CPU GroupQueryAttention needs a head size that is a multiple of 16, "
                        f"and this model's is {head}; use a gguf-* or torch format for it")
    if name == "onnx-int4" and cfg["hidden_size"] % opts.int4_block_size:
        raise UserError(f"hidden_size {cfg['hidden_size']} is not a multiple of int4_block_size "
                        f"{opts.int4_block_size}; pass --set int4_block_size=16 or 32")
    return {"head_size": head}


def produce(parent: Artifact, tmp: Path, opts: Options, name: str) -> dict:
    """Run the model builder in-process (its CLI is `python -m onnxruntime_genai.models.builder`)."""
    import contextlib
    import io
    import shutil

    import onnx
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    precision = "int4" if name == "onnx-int4" else "fp32"
    extra = [f"int4_block_size={opts.int4_block_size}", f"int4_accuracy_level={opts.int4_accuracy_level}"] \
        if precision == "int4" else []
    cache = tmp.parent / f".{tmp.name}-cache"
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            options = parse_extra_options(None, str(parent.path), str(tmp), precision, "cpu", str(cache), extra)
            create_model(None, str(parent.path), str(tmp), precision, "cpu", str(cache), **options)
    except Exception as e:
        raise RuntimeError(f"onnxruntime-genai model builder failed: {e} (log tail: {log.getvalue()[-300:]})") from e
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    ops: dict[str, int] = {}
    for node in onnx.load(str(tmp / "model.onnx"), load_external_data=False).graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"onnx_ops": {k: v for k, v in ops.items() if k in ("MatMul", "MatMulNBits", "GroupQueryAttention")},
            "precision": precision}


class OnnxGenAIEngine(TokenEngine):
    """onnxruntime-genai's Generator, fed one token at a time so our sampling and stop handling apply."""

    def __init__(self, model, tokenizer, artifact=None, context_length: int = 0, eos_ids=None):
        super().__init__(tokenizer, artifact, context_length=context_length, eos_ids=eos_ids)
        self.model = model
        self.gen = None

    @classmethod
    def load(cls, artifact: Artifact, threads: int = 0, **_) -> "OnnxGenAIEngine":
        try:
            import onnxruntime_genai as og
        except ImportError:
            raise UserError("ONNX needs onnxruntime-genai; run: pip install -e '.[quant]'") from None
        cfg = og.Config(str(artifact.path))
        cfg.clear_providers()
        n = threads or 1
        cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": n, "inter_op_num_threads": 1}}}}))
        genai = json.loads((artifact.path / "genai_config.json").read_text())["model"]
        eos = genai.get("eos_token_id")
        eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
        return cls(og.Model(cfg), load_tokenizer(artifact.path), artifact, genai.get("context_length", 0), eos)

    def _new(self):
        import onnxruntime_genai as og

        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=self.context_length or 2048)
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

    def logits(self, ids: list[int]) -> np.ndarray:
        self.gen = self._new()
        rows = []
        for t in ids:
            self.gen.append_tokens([t])
            rows.append(self._last())
        return np.stack(rows)

    def close(self) -> None:
        self.gen = None
        self.model = None
