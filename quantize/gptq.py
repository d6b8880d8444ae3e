"""GPTQ 4-bit artifacts with GPTQModel (CPU kernel), calibrated on built-in sums or a text/JSONL file.

    lifecycle quantize --model runs/merged --format gptq --set group_size=32 --output runs/gptq

auto-gptq is abandoned upstream (CUDA-only wheels, import fails on transformers 5); GPTQModel is its
maintained successor and writes the same checkpoint layout (`quantize_config.json` + safetensors).
GPTQModel needs `GPTQMODEL_CPU_WORKERS` no larger than the machine's cores; it is set here when unset.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from lifecycle.artifact import Artifact
from lifecycle.config import field
from lifecycle.engines.hf import HFEngine
from lifecycle.errors import UserError
from lifecycle.extras import install_hint
from quantize.driver import QuantOptions


@dataclasses.dataclass
class Options(QuantOptions):
    bits: int = field(4, help="weight bits (4 or 8; fewer is smaller and less exact)")
    group_size: int = field(32, help="weights per scale; must divide the hidden size (smaller is closer to fp32, larger is smaller)")
    calibration: str = field("builtin", help="'builtin' (held-in sums and chats for the built-in arithmetic lineage, the "
                                              "generic set's calibration split for any other model), 'arith', 'generic', "
                                              "or a .txt (one sample a line) / .jsonl ('text' or 'messages') file")
    samples: int = field(128, help="calibration samples (more is slower and usually a little better)")
    desc_act: bool = field(False, help="quantize columns by decreasing activation order (slower load, sometimes more exact)")


def _workers() -> None:
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(min(2, os.cpu_count() or 1)))


def check(parent: Artifact, opts: Options, name: str) -> dict:
    cfg = json.loads((parent.path / "config.json").read_text())
    for key in ("hidden_size", "intermediate_size"):
        if cfg.get(key) and cfg[key] % opts.group_size:
            raise UserError(f"gptq: {key} {cfg[key]} is not a multiple of group_size {opts.group_size}; "
                            f"pass --set group_size=N with N dividing it (e.g. 32)")
    if opts.bits not in (4, 8):
        raise UserError(f"gptq: bits must be 4 or 8, got {opts.bits}")
    return {}


def calibration_texts(opts: Options, tok, profile: str = "arith") -> list[str]:
    """`opts.samples` calibration texts. `profile` (`lifecycle.models.task_profile` of the parent) decides
    what 'builtin' means: its probe set's calibration split (`lifecycle.probes`)."""
    from lifecycle.probes import PROBES, probe_set

    kind = profile if opts.calibration == "builtin" else opts.calibration
    if kind in PROBES:
        return probe_set(kind).calibration(tok, opts.samples)
    path = Path(opts.calibration)
    if not path.is_file():
        raise UserError(f"calibration file {path} not found; use calibration=builtin, {', '.join(PROBES)} or a "
                        ".txt/.jsonl path")
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        texts = [r["text"] if "text" in r else tok.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    else:
        texts = [line for line in path.read_text().splitlines() if line.strip()]
    if not texts:
        raise UserError(f"calibration file {path} holds no samples")
    return texts[: opts.samples]


def produce(parent: Artifact, tmp: Path, opts: Options, name: str) -> dict:
    import logging

    import torch
    from transformers import AutoTokenizer

    from lifecycle.loading import save_tokenizer

    _workers()
    from gptqmodel import GPTQModel, QuantizeConfig

    logging.getLogger("gptqmodel").setLevel(logging.WARNING)
    torch.set_num_threads(opts.threads)
    tok = AutoTokenizer.from_pretrained(str(parent.path))
    from lifecycle.models import task_profile

    texts = calibration_texts(opts, tok, task_profile(parent))
    qcfg = QuantizeConfig(bits=opts.bits, group_size=opts.group_size, desc_act=opts.desc_act)
    model = GPTQModel.load(str(parent.path), qcfg, device="cpu")
    model.quantize(texts, batch_size=8)
    model.save(str(tmp))
    save_tokenizer(tok, tmp)
    (tmp / "quant_log.csv").unlink(missing_ok=True)
    if (parent.path / "generation_config.json").is_file():  # GPTQModel rewrites it with do_sample=true
        import shutil

        shutil.copyfile(parent.path / "generation_config.json", tmp / "generation_config.json")
    return {"bits": opts.bits, "group_size": opts.group_size, "calibration_samples": len(texts)}


class GPTQEngine(HFEngine):
    """GPTQModel's CPU kernel behind the HF engine (the loaded object wraps a transformers model)."""

    @classmethod
    def load(cls, artifact: Artifact, threads: int = 0, max_batch_size: int = 32) -> "GPTQEngine":
        from transformers import AutoTokenizer

        from lifecycle.loading import quiet_libraries, setup_torch

        quiet_libraries()
        if threads:
            setup_torch(threads, seed=0)
        _workers()
        try:
            from gptqmodel import GPTQModel
        except ImportError:
            raise UserError(f"GPTQ needs gptqmodel: {install_hint('gptqmodel')}") from None
        wrapped = GPTQModel.load(str(artifact.path), device="cpu")
        engine = cls(wrapped.model, AutoTokenizer.from_pretrained(str(artifact.path)), artifact, max_batch_size=max_batch_size)
        engine.wrapped = wrapped
        return engine
