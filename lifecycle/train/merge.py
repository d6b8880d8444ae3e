"""Merge a LoRA/DoRA adapter into its base and write a plain `hf` checkpoint, with a logits parity check.

    lifecycle merge --model runs/dpo --output runs/merged

Stacked adapters (DPO on SFT on base) are resolved down to the checkpoint first. The merged model's logits
are compared with the adapter model's on probe prompts; the max abs difference is recorded in the
manifest, and a merge over the tolerance is refused (nothing is written). Tied input/output embeddings
stay tied unless the adapter changed one of them, in which case they are untied and saved separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lifecycle.config import field
from lifecycle.errors import UserError

PROBES = [
    [{"role": "user", "content": "What is 12+34?"}],
    [{"role": "user", "content": "Add 7 and 58."}],
    [{"role": "user", "content": "Reverse abcd."}],
    "40+2=",
    "reverse hello = ",
]


@dataclass
class MergeConfig:
    model: str = field("", help="the adapter artifact to merge into its base")
    output: str = field("", help="artifact directory to write (default: the local store)")
    tolerance: float = field(1e-3, help="max abs logits difference allowed between adapter and merged model")
    eval_items: int = field(200, help="held-out sums evaluated on the merged model (0 to skip)")
    threads: int = field(2, help="torch threads")
    trust_remote_code: bool = field(False, help="allow custom model code from the checkpoint")

    def __post_init__(self) -> None:
        if not self.model:
            raise UserError("merge needs --model: an adapter artifact")


def _probe_logits(model, tok):
    import torch

    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if isinstance(p, list)
             else tok.bos_token + p for p in PROBES]
    enc = tok(texts, add_special_tokens=False, return_tensors="pt", padding=True)
    with torch.inference_mode():
        logits = model(**enc).logits
    return logits.masked_fill(enc.attention_mask[..., None] == 0, 0.0)


def _tie_state(model) -> str:
    """'tied' if input and output embeddings share storage, 'untied' otherwise."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None:
        return "untied"
    return "tied" if emb.weight.data_ptr() == head.weight.data_ptr() else "untied"


def merge_adapter(art, trust_remote_code: bool = False):
    """Return (merged_model, tokenizer, report) for an adapter artifact; the report has the parity figure."""
    import torch
    from peft import PeftModel

    from lifecycle.train.common import adapter_base, load_causal_lm

    if art.format != "adapter":
        raise UserError(f"{art.path} has format '{art.format}'; merge takes an 'adapter' artifact")
    base, tok = load_causal_lm(adapter_base(art), trust_remote_code=trust_remote_code)
    was_tied = bool(getattr(base.config, "tie_word_embeddings", False)) and _tie_state(base) == "tied"
    peft_model = PeftModel.from_pretrained(base, str(art.path)).eval()
    reference = _probe_logits(peft_model, tok)
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
    diff = float((reference - _probe_logits(merged, tok)).abs().max())
    return merged, tok, {"logits_max_abs_diff": diff, "embeddings": tie, "probe_prompts": len(PROBES)}


def run(cfg: MergeConfig, out: Path) -> Path:
    from lifecycle.artifact import write_artifact
    from lifecycle.config import to_dict
    from lifecycle.models import resolve
    from lifecycle.train.common import save_tokenizer, setup_torch, stage_eval

    setup_torch(cfg.threads, 0)
    art = resolve(cfg.model)
    merged, tok, report = merge_adapter(art, cfg.trust_remote_code)
    if report["logits_max_abs_diff"] > cfg.tolerance:
        raise UserError(f"merge refused: logits differ by {report['logits_max_abs_diff']:.2e} between the adapter "
                        f"model and the merged model (tolerance {cfg.tolerance:.0e}); nothing was written")
    metrics = {"merge_parity": report}
    if cfg.eval_items:
        metrics.update(stage_eval(merged, tok, cfg.eval_items))
    with write_artifact(out, format="hf", stage="merge", parent=art, options=to_dict(cfg), metrics=metrics) as tmp:
        merged.save_pretrained(tmp)
        save_tokenizer(tok, tmp)
    return out
