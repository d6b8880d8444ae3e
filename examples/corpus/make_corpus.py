"""Write the subtraction corpus: a small domain the built-in tiny-arith model never saw in pretraining.

    python examples/corpus/make_corpus.py            # -> examples/corpus/subtraction.jsonl (deterministic)

tiny-arith pretrained on sums ("12+30=42", "12 plus 30 makes 42.") and string tasks. Each document here is a
few lines of subtraction in the same notations ("42-30=12", "42 minus 30 leaves 12."), the domain that
`lifecycle pretrain --model tiny-arith --data examples/corpus/subtraction.jsonl` adapts it to.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path


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


def main(path: Path, n: int = 3000, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            f.write(json.dumps({"text": document(rng)}) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("subtraction.jsonl"))
