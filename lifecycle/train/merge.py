"""Merge a LoRA/DoRA adapter into its base and write a plain `hf` checkpoint, with a logits parity check.

    lifecycle merge --model runs/dpo --output runs/merged

Stacked adapters (DPO on SFT on base) are resolved down to the checkpoint first. The merge happens in the
checkpoint's own dtype and is saved in it (a bf16 base gives a bf16 checkpoint; peft computes each delta in
float32 on the CPU before rounding). The merged model's logits are compared with the adapter model's on probe
prompts, each run on its own (no padding, so a model without a pad or BOS token needs nothing special); the
max abs difference is recorded in the manifest, and a merge over the tolerance is refused (nothing is
written). The default tolerance follows the dtype: storing W + BA in bf16 rounds every weight to 8 bits of
mantissa, so bf16 and fp16 merges are held to a bound scaled by the logits' own magnitude. Tied input/output
embeddings stay tied unless the adapter changed one of them, in which case they are untied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lifecycle.config import field
from lifecycle.errors import UserError

# Probe prompts: the built-in arithmetic lineage keeps its own; any other model gets plain multilingual text.
PROBES = {
    "arith": [
        [{"role": "user", "content": "What is 12+34?"}],
        [{"role": "user", "content": "Add 7 and 58."}],
        [{"role": "user", "content": "Reverse abcd."}],
        "40+2=",
        "reverse hello = ",
    ],
    "generic": [
        [{"role": "user", "content": "Give me three tips for writing a clear email."}],
        [{"role": "user", "content": "用一句话解释什么是机器学习。"}],
        [{"role": "user", "content": "Écris une phrase sur la mer 🌊."}],
        "The capital of France is",
        "def fibonacci(n):\n    ",
    ],
}
# Default parity tolerance by dtype: an absolute bound for float32, a bound relative to max |logit| otherwise.
TOLERANCE = {"float32": 1e-3, "bfloat16": 3e-2, "float16": 5e-3}


@dataclass
class MergeConfig:
    model: str = field("", help="the adapter artifact to merge into its base")
    output: str = field("", help="artifact directory to write (default: the local store)")
    tolerance: float = field(0.0, help="max abs logits difference allowed between adapter and merged model; 0 = by "
                                        "dtype: 1e-3 for float32, 3e-2 x max|logit| for bf16, 5e-3 x max|logit| for fp16")
    eval_items: int = field(200, help="held-out sums evaluated on the merged model (built-in arithmetic models only; 0 to skip)")
    threads: int = field(2, help="torch threads")
    trust_remote_code: bool = field(False, help="allow custom model code from the checkpoint")

    def __post_init__(self) -> None:
        if not self.model:
            raise UserError("merge needs --model: an adapter artifact")


def _probe_logits(model, tok, probes) -> list:
    """Logits for each probe, run one at a time (no padding), as float32 tensors."""
    import torch

    out = []
    for p in probes:
        if isinstance(p, list):
            ids = tok(tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True),
                      add_special_tokens=False).input_ids
        else:
            ids = tok(p, add_special_tokens=True).input_ids
        device = next(model.parameters()).device
        with torch.inference_mode():
            out.append(model(input_ids=torch.tensor([ids], device=device)).logits[0].float())
    return out


def _tie_state(model) -> str:
    """'tied' if input and output embeddings share storage, 'untied' otherwise."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None:
        return "untied"
    return "tied" if emb.weight.data_ptr() == head.weight.data_ptr() else "untied"


def merge_adapter(art, trust_remote_code: bool = False, profile: str = "generic"):
    """Return (merged_model, tokenizer, report) for an adapter artifact; the report has the parity figure."""
    import torch
    from peft import PeftModel

    from lifecycle.loading import adapter_base, load_causal_lm

    if art.format != "adapter":
        raise UserError(f"{art.path} has format '{art.format}'; merge takes an 'adapter' artifact")
    base, tok = load_causal_lm(adapter_base(art), trust_remote_code=trust_remote_code)
    probes = [p for p in PROBES[profile] if not isinstance(p, list) or getattr(tok, "chat_template", None)]
    was_tied = bool(getattr(base.config, "tie_word_embeddings", False)) and _tie_state(base) == "tied"
    peft_model = PeftModel.from_pretrained(base, str(art.path)).eval()
    reference = _probe_logits(peft_model, tok, probes)
    merged = peft_model.merge_and_unload().eval()

    tie = "untied"
    if was_tied:
        emb, head = merged.get_input_embeddings(), merged.get_output_embeddings()
        if _tie_state(merged) == "tied" or torch.equal(emb.weight, head.weight):
            merged.tie_weights()
            tie = "tied"
        else:  # the adapter touched one side: keep both matrices as trained
            head.weight = torch.nn.Parameter(head.weight.detach().clone())
            merged.config.tie_word_embeddings = False
            tie = "untied by merge"
    found = _probe_logits(merged, tok, probes)
    diff = max(float((r - f).abs().max()) for r, f in zip(reference, found))
    scale = max(float(r.abs().max()) for r in reference)
    agree = sum(int((r.argmax(-1) == f.argmax(-1)).sum()) for r, f in zip(reference, found))
    positions = sum(r.shape[0] for r in reference)
    dtype = str(next(merged.parameters()).dtype).removeprefix("torch.")
    return merged, tok, {"logits_max_abs_diff": diff, "logits_max_abs": scale, "top1_agreement": agree / positions,
                         "dtype": dtype, "embeddings": tie, "probe_prompts": len(probes)}


def tolerance_for(report: dict, given: float) -> float:
    """The parity bound: the configured one, or the dtype's default (relative to max |logit| below fp32)."""
    if given > 0:
        return given
    dtype = report.get("dtype", "float32")
    bound = TOLERANCE.get(dtype, TOLERANCE["float32"])
    return bound if dtype == "float32" else bound * max(1.0, report.get("logits_max_abs", 1.0))


def run(cfg: MergeConfig, out: Path) -> Path:
    from lifecycle.artifact import write_artifact
    from lifecycle.config import to_dict
    from lifecycle.models import resolve, task_profile
    from lifecycle.train.common import save_tokenizer, setup_torch, stage_eval

    setup_torch(cfg.threads, 0)
    art = resolve(cfg.model)
    profile = task_profile(art)
    merged, tok, report = merge_adapter(art, cfg.trust_remote_code, profile)
    report["tolerance"] = tolerance_for(report, cfg.tolerance)
    if report["logits_max_abs_diff"] > report["tolerance"]:
        raise UserError(f"merge refused: logits differ by {report['logits_max_abs_diff']:.2e} between the adapter "
                        f"model and the merged model (tolerance {report['tolerance']:.1e} for {report['dtype']}); "
                        "nothing was written")
    metrics = {"merge_parity": report}
    metrics.update(stage_eval(merged, tok, cfg.eval_items, profile))
    with write_artifact(out, format="hf", stage="merge", parent=art, options=to_dict(cfg), metrics=metrics) as tmp:
        merged.save_pretrained(tmp)
        save_tokenizer(tok, tmp)
    return out
