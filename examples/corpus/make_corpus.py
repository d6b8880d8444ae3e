"""Write the subtraction corpus: a small domain the built-in tiny-arith model never saw in pretraining.

    python examples/corpus/make_corpus.py            # -> examples/corpus/subtraction.jsonl (deterministic)
    python examples/corpus/make_corpus.py /tmp/mixed.jsonl --replay 0.5   # half the documents: the base's own

tiny-arith pretrained on sums ("12+30=42", "12 plus 30 makes 42.") and string tasks. Each document here is a
few lines of subtraction in the same notations ("42-30=12", "42 minus 30 leaves 12."), the domain that
`lifecycle pretrain --model tiny-arith --data examples/corpus/subtraction.jsonl` adapts it to. Trained on
subtraction alone, the model forgets its sums; `--replay F` makes a fraction F of the documents lines of the
base's own pretraining text (`lifecycle.data.synth`), the usual remedy.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def document(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(3, 6)):
        a = rng.randint(10, 99)
        b = rng.randint(0, a)
        r = rng.random()
        if r < 0.6:
            lines.append(f"{a}-{b}={a - b}")
        elif r < 0.85:
            lines.append(f"{a} minus {b} leaves {a - b}.")
        else:
            lines.append(f"Q: What is {a} minus {b}? A: {a - b}")
    return "\n".join(lines)


def main(path: Path, n: int = 3000, seed: int = 0, replay: float = 0.0) -> None:
    from lifecycle.data import synth

    rng = random.Random(seed)
    old = synth.pretrain_lines(10 * n, seed=seed + 1)
    with path.open("w") as f:
        for _ in range(n):
            if replay and rng.random() < replay:
                text = "\n".join(next(old) for _ in range(rng.randint(3, 6)))
            else:
                text = document(rng)
            f.write(json.dumps({"text": text}) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Write the subtraction corpus (JSONL, one document a line).")
    ap.add_argument("path", nargs="?", default=str(Path(__file__).with_name("subtraction.jsonl")))
    ap.add_argument("--n", type=int, default=3000, help="documents")
    ap.add_argument("--replay", type=float, default=0.0, help="fraction of documents from the base's own text")
    args = ap.parse_args()
    main(Path(args.path), args.n, replay=args.replay)
