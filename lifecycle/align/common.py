"""Pieces the alignment methods share: policy options, loading, held-out measures and the adapter artifact.

Every policy method (DPO family, ORPO, CPO, SimPO, KTO, GRPO, RLOO) trains a fresh LoRA on the given
policy (an SFT adapter or checkpoint, merged in memory) and writes an `adapter` artifact whose base is that
policy, so `lifecycle merge` folds it in like any other adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lifecycle.config import field
from lifecycle.errors import UserError


@dataclass
class PolicyOptions:
    """Fields every policy method shares; each method's config adds its own."""

    model: str = field("", help="the policy to align: an SFT adapter or hf artifact (also the reference where one is used)")
    output: str = field("", help="artifact directory to write (default: the local store)")
    max_steps: int = field(150, help="optimizer steps")
    batch_size: int = field(16, help="examples per step")
    learning_rate: float = field(1e-3, help="peak learning rate of the LoRA")
    lora_r: int = field(16, help="LoRA rank")
    lora_alpha: int = field(32, help="LoRA scaling numerator")
    lora_dropout: float = field(0.0, help="dropout on the LoRA path")
    target_modules: str = field("all-linear", help="modules the LoRA wraps")
    max_length: int = field(128, help="tokens per prompt+answer")
    n_examples: int = field(1000, help="records drawn from a builtin: data source")
    eval_items: int = field(200, help="held-out sums evaluated before and after training (0 to skip)")
    seed: int = field(0, help="seed")
    threads: int = field(2, help="torch threads")
    trust_remote_code: bool = field(False, help="allow custom model code from the checkpoint")

    def __post_init__(self) -> None:
        if not self.model:
            raise UserError(f"align --method {self.METHOD} needs --model: the SFT artifact to align")
        if self.max_steps < 1:
            raise UserError("max_steps must be >= 1")

    METHOD = "policy"  # class attribute, not a field: the name recorded in the manifest


def load_policy(cfg):
    """Seed, pin threads and return (policy artifact, merged model, tokenizer).

    TRL's collators need a pad token; a model without one (Llama-3, Mistral) pads with EOS while training
    (padded positions are masked). The adapter saves the policy's own tokenizer files, unchanged."""
    from lifecycle.loading import load_causal_lm, setup_torch
    from lifecycle.models import resolve

    setup_torch(cfg.threads, cfg.seed)
    policy = resolve(cfg.model)
    model, tok = load_causal_lm(policy, trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return policy, model, tok


def load_data(spec: str, fields: tuple[str, ...], method: str, example: str, n: int, seed: int) -> list[dict]:
    """Records with the fields `method` needs; a wrong shape is one error naming the fields and an example."""
    from lifecycle.data.load import load_records

    try:
        return load_records(spec, fields, n=n, seed=seed)
    except UserError as e:
        if "lacks field" in str(e):
            raise UserError(f"{method} needs records with {', '.join(fields)} (e.g. --data {example}); "
                            f"{e}") from None
        raise


def _completion_logprobs(model, tok, prompts: list[list[dict]], completions: list[list[dict]]) -> list[float]:
    """Sum of log p(completion tokens | prompt) for each chat, in memory-bounded batches."""
    from lifecycle.loading import eos_token_ids, pad_token_id
    from lifecycle.logprobs import span_logprobs

    rows, spans = [], []
    for p, c in zip(prompts, completions):
        head = tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(p + c, tokenize=False)
        h = tok(head, add_special_tokens=False)["input_ids"]
        f = tok(full, add_special_tokens=False)["input_ids"]
        rows.append(f)
        spans.append((max(len(h), 1), len(f)))
    was_training = model.training
    model.eval()
    try:
        found = span_logprobs(model, rows, spans, pad_token_id(tok, eos_token_ids(model, tok)))
    finally:
        if was_training:
            model.train()
    return [lp for lp, _, _ in found]


def preference_rates(model, tok, n: int) -> dict:
    """Held-out preference rate: share of pairs whose chosen answer the policy gives more log-probability.

    `pref_rate_style` (concise over verbose) and `pref_rate_correctness` (right over wrong), on sums held
    out from every training set.
    """
    from lifecycle.data import synth

    out = {}
    for kind in ("style", "correctness"):
        pairs = synth.preference_records(n, seed=99, kind=kind, held_out=True)
        prompts = [r["prompt"] for r in pairs]
        chosen = _completion_logprobs(model, tok, prompts, [r["chosen"] for r in pairs])
        rejected = _completion_logprobs(model, tok, prompts, [r["rejected"] for r in pairs])
        out[f"pref_rate_{kind}"] = sum(c > r for c, r in zip(chosen, rejected)) / n
    return out


def policy_measures(model, tok, n: int, profile: str = "arith") -> dict:
    """Held-out exact match, verbose rate and preference rates (what the preference methods move), on the
    built-in arithmetic lineage only; other models are measured by their release's eval tasks."""
    from lifecycle.train.common import stage_eval

    if not n or profile != "arith":
        return {}
    return {**stage_eval(model, tok, n, profile), **preference_rates(model, tok, n)}


def before_after(before: dict, after: dict) -> dict:
    """Flat metrics: the after values under their names, the before values as `before/<name>`."""
    return {**after, **{f"before/{k}": v for k, v in before.items() if k != "eval_items"}}


def last_logged(history: list[dict], prefix: str = "") -> dict:
    """The last logged value of every key (with `prefix`), from a MetricsLog history."""
    return {k: v for step in history for k, v in step.items() if k.startswith(prefix) and k != "step"}


def write_policy_adapter(out: Path, cfg, policy, model, tok, log, metrics: dict) -> Path:
    """Save the trained LoRA as an `adapter` artifact on `policy`, recording method, options and metrics."""
    from lifecycle.artifact import write_artifact
    from lifecycle.config import to_dict
    from lifecycle.loading import load_tokenizer
    from lifecycle.train.common import base_ref, save_tokenizer

    with write_artifact(out, format="adapter", stage="align", parent=policy,
                        options={"method": cfg.METHOD, **to_dict(cfg)}, metrics=metrics,
                        extra={"base": base_ref(policy), "adapter_method": "lora", "align_method": cfg.METHOD}) as tmp:
        model.save_pretrained(tmp)
        save_tokenizer(load_tokenizer(policy.path, cfg.trust_remote_code), tmp)  # as the policy had it
        log.write(tmp / "train_log.json", metrics)
    return out


def train_and_write(cfg, out: Path, policy, model, tok, make_trainer, extra_metrics=None) -> Path:
    """Measure, train (make_trainer(work_dir, log) -> trainer), measure again and write the adapter."""
    import tempfile

    from lifecycle.train.common import MetricsLog, drop_printer, is_writer, writer_done

    from lifecycle.models import task_profile

    profile = task_profile(policy)
    before = policy_measures(model, tok, cfg.eval_items, profile)
    log = MetricsLog()
    with tempfile.TemporaryDirectory() as work:
        trainer = make_trainer(work, log)
        drop_printer(trainer)
        result = trainer.train()
    metrics = {"train_loss": result.training_loss, "train_wall_s": round(result.metrics["train_runtime"], 1)}
    metrics.update(extra_metrics(trainer, log) if extra_metrics else {})
    if not is_writer(trainer, metrics):  # under `accelerate launch` the main process measures and writes
        return out
    metrics.update(before_after(before, policy_measures(trainer.model, tok, cfg.eval_items, profile)))
    write_policy_adapter(out, cfg, policy, trainer.model, tok, log, metrics)
    writer_done(trainer)
    return out
