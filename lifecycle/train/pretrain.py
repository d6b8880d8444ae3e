"""Pretraining: the built-in base on synthetic sums, or any model on a user's corpus.

    lifecycle pretrain --preset tiny-arith --output runs/base                 # the built-in base, ~5 min
    lifecycle pretrain --model Qwen/Qwen2.5-0.5B --data corpus.jsonl -o runs/cpt   # continued pretraining
    lifecycle pretrain --model tiny-arith --data notes/ --method lora -o runs/cpt  # ... as a LoRA adapter
    lifecycle pretrain --preset micro --data corpus.txt -o runs/scratch       # from scratch, own tokenizer

Without --data, a nanoGPT-style loop: packed blocks of whole lines, AdamW, cosine schedule; it trains the
SentencePiece tokenizer first, then the model, then measures greedy exact match on held-out sums. With
--data, `lifecycle.train.pretrain_corpus` streams the corpus through the transformers Trainer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from lifecycle.config import field


@dataclass
class PretrainConfig:
    preset: str = field("tiny-arith", help="model shape from lifecycle/train/presets.py (from scratch, without --model)")
    model: str = field("", help="continue pretraining this checkpoint (built-in name, store name, path); needs data")
    data: str = field("", help="corpus: .txt, .jsonl with a text field, a folder of such shards, or a dataset artifact; empty = built-in synthetic sums")
    method: str = field("full", help="with data: full (writes an hf checkpoint) or lora (writes an adapter; needs --model)")
    output: str = field("", help="artifact directory to write (default: the local store)")
    max_steps: int = field(3000, help="optimizer steps; more steps, better sums, longer run")
    batch_size: int = field(32, help="blocks per step")
    seq_len: int = field(64, help="tokens per block; built-in sums: whole lines, never split; with data: exactly seq_len, EOS between documents")
    learning_rate: float = field(0.0, help="peak AdamW learning rate, cosine decay to 10% after 5% warmup; 0 = the recipe's: 2e-3 from scratch (3e-3 weakened sums asked across a gap), 2e-4 continued full, 1e-3 continued LoRA")
    weight_decay: float = field(0.01, help="AdamW weight decay")
    vocab_size: int = field(512, help="SentencePiece vocabulary; digits are always single tokens")
    corpus_lines: int = field(120_000, help="synthetic lines generated for pretraining")
    eval_items: int = field(200, help="held-out sums for the final exact-match check")
    seed: int = field(0, help="seed for data, init and sampling")
    threads: int = field(2, help="torch threads (0 = torch default, which oversubscribes small machines)")
    text_field: str = field("text", help="with data: the JSONL field holding each document's text")
    text_unit: str = field("paragraph", help="with data: a plain-text document is a blank-line-separated paragraph, or each line")
    heldout_every: int = field(20, help="with data: every N-th document is held out for perplexity (5% at 20)")
    eval_blocks: int = field(64, help="with data: held-out blocks scored for perplexity before and after")
    shuffle_buffer: int = field(10_000, help="with data: documents in the streaming shuffle buffer (memory bound)")
    tokenizer_lines: int = field(200_000, help="with data, from scratch: corpus lines the tokenizer trains on")
    save_steps: int = field(200, help="with data: checkpoint every N steps; rerunning the command resumes from the last")
    lora_r: int = field(16, help="LoRA rank")
    lora_alpha: int = field(32, help="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = field(0.0, help="dropout on the LoRA path")
    target_modules: str = field("all-linear", help="modules LoRA wraps: 'all-linear' or comma-separated names")
    dtype: str = field("auto", help="with --model: weights dtype while training (auto keeps the checkpoint's)")
    trust_remote_code: bool = field(False, help="allow custom model code from the checkpoint (off: safer)")

    def __post_init__(self) -> None:
        from lifecycle.errors import UserError
        from lifecycle.train.presets import PRESETS

        if self.preset not in PRESETS:
            raise UserError(f"unknown preset '{self.preset}'; choose one of: {', '.join(PRESETS)}")
        if self.max_steps < 1 or self.batch_size < 1 or self.seq_len < 16:
            raise UserError("max_steps and batch_size must be >= 1 and seq_len >= 16")
        if self.method not in ("full", "lora"):
            raise UserError(f"pretrain method '{self.method}' is unknown; choose full or lora")
        if self.model and not self.data:
            raise UserError("continued pretraining needs a corpus: pass --data FILE (a .txt, a .jsonl or a dataset artifact)")
        if self.method == "lora" and not self.model:
            raise UserError("LoRA needs a model to adapt: pass --model, or use --method full to train from scratch")
        if self.data and self.seq_len > PRESETS[self.preset]["max_position_embeddings"] and not self.model:
            raise UserError(f"seq_len {self.seq_len} exceeds preset {self.preset}'s "
                            f"{PRESETS[self.preset]['max_position_embeddings']} positions")


def pack_blocks(tok, lines: list[str], seq_len: int, rng: random.Random) -> list[list[int]]:
    """Group whole lines into blocks of at most seq_len tokens (BOS first); a block never splits a line."""
    lengths = [len(x) for x in tok(lines, add_special_tokens=False).input_ids]
    blocks, current, used = [], [], 1
    for line, n in zip(lines, lengths):
        if n + 2 > seq_len:
            continue
        if used + n + 1 > seq_len and current:
            blocks.append("\n".join(current))
            current, used = [], 1
        current.append(line)
        used += n + 1
    if current:
        blocks.append("\n".join(current))
    ids = tok([b + "\n" for b in blocks], add_special_tokens=True).input_ids
    ids = [x[:seq_len] for x in ids]
    rng.shuffle(ids)
    return ids


def run(cfg: PretrainConfig, out: Path) -> Path:
    """Train and write an `hf` artifact (or an adapter) to `out`; returns its path."""
    if cfg.data:
        from lifecycle.train.pretrain_corpus import run_corpus

        return run_corpus(cfg, out)
    return run_builtin(cfg, out)


def run_builtin(cfg: PretrainConfig, out: Path) -> Path:
    """The built-in base: synthetic sums, the nanoGPT-style loop, greedy exact match on held-out sums."""
    import math
    import time

    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from lifecycle.artifact import write_artifact
    from lifecycle.config import to_dict
    from lifecycle.data import synth
    from lifecycle.engines.hf import HFEngine
    from lifecycle.eval.arith import raw_eval
    from lifecycle.train.common import MetricsLog, rich_progress, setup_torch
    from lifecycle.train.presets import PRESETS
    from lifecycle.train.tokenizer import load_tokenizer, train_tokenizer

    setup_torch(cfg.threads, cfg.seed)
    rng = random.Random(cfg.seed)
    log = MetricsLog()
    metrics: dict = {}
    with write_artifact(out, format="hf", stage="pretrain", options=to_dict(cfg), metrics=metrics) as tmp:
        train_tokenizer(tmp, synth.tokenizer_corpus(seed=cfg.seed + 7), cfg.vocab_size)
        tok = load_tokenizer(tmp)
        lines = list(synth.pretrain_lines(cfg.corpus_lines, seed=cfg.seed))
        blocks = pack_blocks(tok, lines, cfg.seq_len, rng)

        config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id, **PRESETS[cfg.preset])
        model = LlamaForCausalLM(config)
        n_params = sum(p.numel() for p in model.parameters())
        peak = cfg.learning_rate or 2e-3
        opt = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=cfg.weight_decay,
                                betas=(0.9, 0.95))
        warmup = max(1, cfg.max_steps // 20)

        def lr_at(step: int) -> float:
            if step < warmup:
                return peak * (step + 1) / warmup
            frac = (step - warmup) / max(1, cfg.max_steps - warmup)
            return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

        pad = tok.pad_token_id
        t0 = time.time()
        model.train()
        with rich_progress() as progress:
            task = progress.add_task("pretrain", total=cfg.max_steps, info="")
            for step in range(cfg.max_steps):
                batch = [blocks[(step * cfg.batch_size + i) % len(blocks)] for i in range(cfg.batch_size)]
                width = max(len(b) for b in batch)
                input_ids = torch.tensor([b + [pad] * (width - len(b)) for b in batch])
                mask = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in batch])
                labels = input_ids.masked_fill(mask == 0, -100)
                for g in opt.param_groups:
                    g["lr"] = lr_at(step)
                loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                if step % 10 == 0 or step == cfg.max_steps - 1:
                    log.add(step, loss=loss.item(), lr=lr_at(step))
                    progress.update(task, info=f"loss {loss.item():.3f}")
                progress.update(task, completed=step + 1)
        train_s = time.time() - t0

        model.eval()
        model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                                   pad_token_id=pad)
        result = raw_eval(HFEngine(model, tok), n=cfg.eval_items)
        metrics.update({
            "parameters": n_params,
            "final_loss": log.history[-1]["loss"],
            "raw_exact_match": result["raw_exact_match"],
            "eval_items": result["n"],
            "train_wall_s": round(train_s, 1),
            "blocks": len(blocks),
        })
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        log.write(tmp / "train_log.json", metrics)
    return out
