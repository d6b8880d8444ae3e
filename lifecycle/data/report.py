"""The run report: records read, kept and dropped by reason (with examples), and a token-length histogram.

Every record read is either kept or dropped with a reason, so `read == kept + dropped` always holds;
`check()` asserts it. Malformed records are listed as `file:line: what is wrong`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

MAX_MALFORMED_LISTED = 1000
SNIPPET = 160


@dataclass
class Report:
    examples_per_reason: int = 3
    read: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    malformed: list = field(default_factory=list)
    pii: Counter = field(default_factory=Counter)
    formats: dict = field(default_factory=dict)
    skipped_files: list = field(default_factory=list)
    token_lengths: list = field(default_factory=list)
    clusters: list = field(default_factory=list)
    splits: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def keep(self, tokens: int) -> None:
        self.kept += 1
        self.token_lengths.append(tokens)

    def drop(self, reason: str, where: str, detail: str = "", text: str = "") -> None:
        self.dropped[reason] += 1
        if reason == "malformed" and len(self.malformed) < MAX_MALFORMED_LISTED:
            self.malformed.append(f"{where}: {detail}")
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.examples_per_reason:
            ex = {"where": where}
            if detail:
                ex["detail"] = detail
            if text:
                ex["text"] = text if len(text) <= SNIPPET else text[:SNIPPET] + "…"
            shown.append(ex)

    def check(self) -> None:
        if self.read != self.kept + self.dropped_total:
            raise AssertionError(f"report invariant broken: read {self.read} != kept {self.kept} + "
                                 f"dropped {self.dropped_total}")

    def _edges(self, bins: int = 40) -> list[float]:
        """Bin edges of whole-token width, so integer lengths never alias into uneven bins."""
        lo, hi = min(self.token_lengths), max(self.token_lengths)
        width = max(1, -(-(hi - lo + 1) // bins))
        return [lo - 0.5 + i * width for i in range((hi - lo) // width + 2)]

    def histogram(self) -> dict:
        import numpy as np

        if not self.token_lengths:
            return {"counts": [], "edges": []}
        counts, edges = np.histogram(np.asarray(self.token_lengths), bins=self._edges())
        return {"counts": counts.tolist(), "edges": [float(e) for e in edges]}

    def to_dict(self) -> dict:
        lengths = sorted(self.token_lengths)
        stats = {}
        if lengths:
            stats = {"min": lengths[0], "max": lengths[-1], "mean": round(sum(lengths) / len(lengths), 2),
                     "p50": lengths[len(lengths) // 2], "p95": lengths[min(len(lengths) - 1, int(len(lengths) * 0.95))]}
        return {
            "read": self.read, "kept": self.kept, "dropped": self.dropped_total,
            "dropped_by_reason": dict(self.dropped.most_common()),
            "invariant": "read == kept + dropped",
            "splits": self.splits,
            "formats": self.formats,
            "pii_redacted": dict(self.pii),
            "token_length": {**stats, "histogram": self.histogram()},
            "duplicate_clusters": {"count": len(self.clusters), "largest": self.clusters[:20]},
            "examples": self.examples,
            "malformed": self.malformed,
            "skipped_files": self.skipped_files,
            **self.extra,
        }

    def write(self, folder: Path, tokenizer: str = "whitespace") -> None:
        (folder / "report.json").write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        self.plot(folder / "token_lengths.png", tokenizer)

    def plot(self, path: Path, tokenizer: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        if self.token_lengths:
            ax.hist(self.token_lengths, bins=self._edges(), color="#4472c4")
        else:
            ax.text(0.5, 0.5, "no records kept", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(f"tokens per record ({tokenizer})")
        ax.set_ylabel("records")
        ax.set_title(f"token lengths of {self.kept} kept records")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)

    def print(self, console=None) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        console = console or Console(stderr=True)
        table = Table("", "records", box=None, title="data report")
        table.add_row("read", str(self.read))
        table.add_row("kept", str(self.kept))
        for reason, n in self.dropped.most_common():
            table.add_row(f"dropped: {reason}", str(n))
        for split, n in self.splits.items():
            table.add_row(f"split: {split}", str(n))
        for kind, n in sorted(self.pii.items()):
            table.add_row(f"redacted: {kind}", str(n))
        console.print(table)
        for line in self.malformed[:10]:
            console.print(f"[yellow]malformed[/yellow] {escape(line)}", highlight=False)
        if len(self.malformed) > 10:
            console.print(f"... and {self.dropped['malformed'] - 10} more malformed (see report.json)")
