"""Every quantization format on one parent: size, ratio, produce/load time, decode tokens/s, agreement, exact match.

    python benchmarks/quant_matrix.py                          # tiny-arith, every installed format
    python benchmarks/quant_matrix.py --model runs/merged --formats gguf-q8_0,int8 --eval-items 200
    python benchmarks/quant_matrix.py --random-llama 100m --eval-items 0   # decode speed on a ~100M random Llama

Figures come from each artifact's parity report (quantize/parity.py): top-1 agreement and mean KL over
teacher-forced next-token distributions, greedy agreement, held-out exact match (chat and raw `a+b=`), and
decode tokens/s at batch 1 (greedy, up to 64 tokens, one thread). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("LIFECYCLE_NO_PROGRESS", "1")


def main() -> None:
    from lifecycle.artifact import Artifact
    from lifecycle.errors import UserError
    from quantize import FORMATS, missing_requirements
    from quantize.driver import quantize

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-arith")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--eval-items", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="")
    ap.add_argument("--random-llama", choices=["100m"], help="benchmark a randomly initialised Llama of this size "
                    "(tiny-arith's tokenizer; agreement on random weights is not a quality measure, speed is)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="quant-matrix-"))
    if args.random_llama:
        args.model = str(random_llama(out / "random-llama"))
    cache: dict = {}
    rows = []
    for name in args.formats.split(","):
        if missing_requirements(name):
            rows.append(f"| {name} | not installed: {', '.join(missing_requirements(name))} |")
            continue
        t0 = time.perf_counter()
        try:
            path = quantize(args.model, name, out / name, [f"eval_items={args.eval_items}", f"threads={args.threads}"],
                            overwrite=True, parent_cache=cache)
        except UserError as e:
            rows.append(f"| {name} | refused: {e} |")
            continue
        m = Artifact.load(path).metrics
        em = "-" if m.get("exact_match") is None else f"{m['exact_match']:.3f}"
        raw = "-" if m.get("raw_exact_match") is None else f"{m['raw_exact_match']:.3f}"
        rows.append(f"| {name} | {FORMATS[name].runtime} | {m['size_bytes'] / 1e6:.2f} MB | {m['ratio_to_parent']:.2f}x "
                    f"| {m['produce_s']:.1f} | {m['load_s']:.2f} | {m['decode_tok_s']:.0f} | {m['top1_agreement']:.3f} "
                    f"| {m['mean_kl']:.1e} | {m['greedy_agreement']:.3f} | {em} | {raw} |")
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    parent = next(iter(cache.get(k) for k in cache if isinstance(k, tuple)), None) or {}
    print(f"\nparent {args.model}: chat exact match {parent.get('exact_match')}, raw {parent.get('raw_exact_match')} "
          f"({args.eval_items} held-out sums)\n")
    print("| format | runtime | size | ratio to parent | produce s | load s | decode tok/s | top-1 agr. | mean KL "
          "| greedy agr. | exact match | raw exact match |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


def random_llama(dest: Path) -> Path:
    """~100M parameters: hidden 768, 12 layers, 12 heads of 64, MLP 2048, untied 512-token vocab."""
    import json
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lifecycle.models import resolve

    if (dest / "config.json").is_file():
        return dest
    src = resolve("tiny-arith").path
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
               num_key_value_heads=12, head_dim=64, max_position_embeddings=512, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    model.save_pretrained(dest)
    for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        shutil.copyfile(src / f, dest / f)
    print(f"random Llama: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters", file=sys.stderr)
    return dest


if __name__ == "__main__":
    main()
