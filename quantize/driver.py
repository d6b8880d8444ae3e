"""Produce one format's artifact from a parent `hf` artifact, with its parity report in the manifest.

    from quantize.driver import quantize
    path = quantize("tiny-arith", "gguf-q8_0", "runs/q8", sets=["eval_items=50"])

Steps: resolve and check the parent, build the format's options (`--set key=value`), let the format module
write its files into a temp dir, copy the tokenizer and chat template beside them, load the result through
the registered Engine, compare it with the parent, and rename the artifact into place (atomic).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from lifecycle.artifact import Artifact, write_artifact
from lifecycle.config import field
from lifecycle.errors import UserError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json")


@dataclasses.dataclass
class QuantOptions:
    """Fields every format shares; each format module subclasses this with its own."""

    eval_items: int = field(200, help="held-out sums for exact match in the parity report, arith set only (0 skips it; fewer is faster)")
    parity_prompts: int = field(32, help="prompts for top-1 agreement, KL and greedy agreement vs the parent")
    parity_texts: str = field("auto", help="parity inputs: auto (sums for the built-in arithmetic lineage, else the "
                                           "built-in generic set), arith, generic, or a JSONL of text/prompt/messages lines")
    threads: int = field(1, help="CPU threads for conversion and the parity run (torch, llama.cpp, ORT)")

    def __post_init__(self) -> None:
        if self.eval_items < 0 or self.parity_prompts < 1 or self.threads < 1:
            raise UserError("eval_items must be >= 0, parity_prompts >= 1 and threads >= 1")
        if self.parity_texts not in ("auto", "arith", "generic") and not Path(self.parity_texts).expanduser().is_file():
            raise UserError(f"parity_texts {self.parity_texts!r} is not auto, arith, generic or an existing JSONL file")


def copy_tokenizer(parent: Artifact, dest: Path) -> None:
    """The tokenizer and chat template travel with every format (the engines render chats with them)."""
    for name in TOKENIZER_FILES:
        src = parent.path / name
        if src.is_file() and not (dest / name).exists():
            shutil.copyfile(src, dest / name)


def check_parent(parent: Artifact) -> None:
    if parent.format != "hf":
        raise UserError(f"{parent.path} has format '{parent.format}'; quantize needs an 'hf' checkpoint "
                        "(run `lifecycle merge` on an adapter first)")
    if not (parent.path / "tokenizer.model").is_file() and not (parent.path / "tokenizer.json").is_file():
        raise UserError(f"{parent.path} has no tokenizer files; save the tokenizer with the model")


def quantize(model: str | Path, name: str, output: str | Path, sets: list[str] | None = None,
             overwrite: bool = False, parent_cache: dict | None = None, options: dict | None = None) -> Path:
    """Write the `name` artifact for `model` at `output` and return its path.

    `parent_cache` (a dict the caller keeps across formats) holds the parent engine and its exact-match
    figures, so several formats in one run load and evaluate the parent once. `options` holds typed field
    values (from YAML: lists stay lists); `sets` are `key=value` strings from the command line, applied last.
    """
    from lifecycle.config import build
    from lifecycle.engine import engine_class, load_engine
    from lifecycle.models import resolve
    from quantize import format_module, format_spec
    from quantize.parity import compare

    spec = format_spec(name)
    mod = format_module(name)
    opts = build(mod.Options, None, options or {}, sets)
    parent = resolve(str(model))
    check_parent(parent)
    if hasattr(mod, "check"):
        mod.check(parent, opts, name)  # shape and tokenizer checks before any work
    cache = parent_cache if parent_cache is not None else {}
    if cache.get("path") != str(parent.path):
        cache.clear()
        cache.update(path=str(parent.path), engine=load_engine(parent, threads=opts.threads))

    metrics: dict = {"runtime": spec.runtime}
    with write_artifact(output, format=name, stage="quantize", parent=parent,
                        options={"format": name, **dataclasses.asdict(opts)}, metrics=metrics,
                        overwrite=overwrite) as tmp:
        t0 = time.perf_counter()
        notes = mod.produce(parent, tmp, opts, name) or {}
        metrics["produce_s"] = round(time.perf_counter() - t0, 2)
        import gc

        gc.collect()  # the producer's working copy goes before the child loads: parent + one copy at a time
        copy_tokenizer(parent, tmp)
        staged = Artifact(tmp, {"format": name, "files": {}, "created_by": {"stage": "quantize"}})
        t0 = time.perf_counter()
        child = engine_class(name).load(staged, threads=opts.threads)
        metrics["load_s"] = round(time.perf_counter() - t0, 3)
        try:
            parent_engine = cache["engine"]
            report = compare(parent_engine, child, parent_engine.tok, prompts=opts.parity_prompts,
                             eval_items=opts.eval_items, parent_metrics=cache.get(("em", opts.eval_items)),
                             texts=opts.parity_texts)
        finally:
            child.close()
        if "parent_exact_match" in report:
            cache[("em", opts.eval_items)] = {"exact_match": report["parent_exact_match"],
                                              "raw_exact_match": report["parent_raw_exact_match"]}
        size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        metrics.update(report)
        metrics.update(notes)
        metrics.update(size_bytes=size, parent_size_bytes=parent.size_bytes(),
                       ratio_to_parent=round(parent.size_bytes() / max(size, 1), 3),
                       chat_template=bool(getattr(child.tok, "chat_template", None)))
    return Path(output)
