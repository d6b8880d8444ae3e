"""Torch weight-only formats, saved as safetensors checkpoints that transformers reloads by itself:

- `int8`: torchao Int8WeightOnlyConfig through transformers' TorchAoConfig (Linear weights int8, per row);
- `fp8`: torchao Float8WeightOnlyConfig (e4m3). On CPU this is storage only: weights are upcast for every
  matmul, so it is correct but not faster; the manifest says "emulated on CPU";
- `int4`: bitsandbytes NF4 (Linear weights 4-bit, blocks of 64, fp32 compute).

    lifecycle quantize --model tiny-arith --format int8 --output runs/int8

Embeddings and norms keep the parent's dtype in all three (only `nn.Linear` weights are quantized).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lifecycle.artifact import Artifact
from lifecycle.config import field
from lifecycle.engines.hf import HFEngine
from lifecycle.errors import UserError
from quantize.driver import QuantOptions

CPU_FP8_NOTE = "emulated on CPU (fp8 storage, fp32 compute)"


@dataclasses.dataclass
class Options(QuantOptions):
    skip_modules: list[str] = field(["lm_head"], help="module names kept in full precision (lm_head is tied to the embeddings here)")
    nf4_double_quant: bool = field(False, help="int4 only: also quantize the NF4 scales (smaller, slightly less exact)")


def check(parent: Artifact, opts: Options, name: str) -> dict:
    """int4: bitsandbytes 0.50.2's CPU NF4 quantizer mis-quantizes weights whose rows are not a multiple of
    its block size (64): measured relative weight error 0.23-0.44 against 0.09 for a reference NF4."""
    import json
    import logging

    if name != "int4":
        return {}
    cfg = json.loads((parent.path / "config.json").read_text())
    bad = {k: cfg[k] for k in ("hidden_size", "intermediate_size") if cfg.get(k) and cfg[k] % 64}
    if bad:
        logging.getLogger("lifecycle.quantize").warning(
            "int4: rows of %s are not multiples of 64; bitsandbytes' CPU NF4 quantizes them badly", bad)
    return {f"{k} % 64": v % 64 for k, v in bad.items()}


def _quant_config(name: str, opts: Options):
    import torch
    from transformers import BitsAndBytesConfig, TorchAoConfig

    if name == "int4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
                                  bnb_4bit_use_double_quant=opts.nf4_double_quant,
                                  llm_int8_skip_modules=opts.skip_modules or None)
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    quant = Int8WeightOnlyConfig() if name == "int8" else Float8WeightOnlyConfig()
    return TorchAoConfig(quant_type=quant, modules_to_not_convert=opts.skip_modules or None)


def produce(parent: Artifact, tmp: Path, opts: Options, name: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lifecycle.loading import quiet_libraries, save_tokenizer

    quiet_libraries()
    torch.set_num_threads(opts.threads)
    from lifecycle.loading import torch_dtype

    # what is not quantized (embeddings, norms, a skipped lm_head) keeps the parent's dtype: a bf16 parent
    # upcast to fp32 made Qwen2.5-0.5B's int8 artifact 0.9 GB instead of 0.6 GB
    model = AutoModelForCausalLM.from_pretrained(str(parent.path), dtype=torch_dtype("auto", parent.path), device_map="cpu",
                                                 quantization_config=_quant_config(name, opts))
    model.save_pretrained(str(tmp), safe_serialization=True)
    save_tokenizer(AutoTokenizer.from_pretrained(str(parent.path)), tmp)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear) or "Linear4bit" in type(m).__name__]
    quantized = sum(1 for m in linear if type(m.weight).__name__ in ("Int8Tensor", "Float8Tensor", "Params4bit"))
    notes = {"quantized_linear": quantized, "total_linear": len(linear)}
    if name == "int4":
        notes["shape_check"] = check(parent, opts, name)
    if name == "fp8":
        notes["compute"] = CPU_FP8_NOTE
    return notes


class TorchQuantEngine(HFEngine):
    """HFEngine over a checkpoint whose config.json carries its quantization_config (torchao or bnb)."""

    @classmethod
    def load(cls, artifact: Artifact, threads: int = 0, max_batch_size: int = 32) -> "TorchQuantEngine":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lifecycle.loading import quiet_libraries, setup_torch

        quiet_libraries()
        if threads:
            setup_torch(threads, seed=0)
        try:
            from lifecycle.loading import torch_dtype

            model = AutoModelForCausalLM.from_pretrained(str(artifact.path), device_map="cpu",
                                                         dtype=torch_dtype("auto", artifact.path))
        except ImportError as e:
            from lifecycle.extras import install_command

            raise UserError(f"{artifact.path} ({artifact.format}) needs a library that is missing ({e}); "
                            f"run: {install_command('quant')}") from None
        for mod in model.modules():
            # bnb's packed AVX512-bf16 CPU path needs in_features % 64 == 0 and computes in bf16; keep fp32.
            if hasattr(mod, "support_avx512bf16_for_cpu"):
                mod.support_avx512bf16_for_cpu = False
        tok = AutoTokenizer.from_pretrained(str(artifact.path))
        return cls(model, tok, artifact, max_batch_size=max_batch_size)
