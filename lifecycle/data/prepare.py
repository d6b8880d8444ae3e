"""Prepare a dataset Artifact: collect -> detect format -> normalise -> clean -> filter -> dedup -> split.

    lifecycle data prepare --input data/ --output out/ds --config configs/data-prepare.yaml --set redact_pii=true

The artifact holds `train.jsonl`, `validation.jsonl` and `test.jsonl` (normalised records, the contract with
`lifecycle sft` and `lifecycle align`), `hf/` (a DatasetDict from `save_to_disk`), `report.json` and
`token_lengths.png`. Its manifest records the counts per split and the sha256 of every input and output.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lifecycle.config import field
from lifecycle.data import formats
from lifecycle.data.clean import (
    LanguageId,
    QualityRules,
    html_to_text,
    looks_like_html,
    normalise_text,
    quality_reason,
)
from lifecycle.data.collect import TEXT_KINDS, head, read, sources
from lifecycle.data.crawl import CrawlOptions
from lifecycle.data.dedup import Deduper
from lifecycle.data.pii import redact_pii
from lifecycle.data.report import Report
from lifecycle.data.tokens import token_counter
from lifecycle.errors import UserError

DATASET_FORMAT = "dataset"
SAMPLE_FOR_DETECTION = 200


@dataclass
class PrepareConfig:
    inputs: list[str] = field([], help="files, folders, saved HF datasets or http(s) URLs (--input, repeatable)")
    output: str = field("", help="artifact directory to write (--output)")
    format: str = field("auto", help="auto | alpaca | sharegpt | messages | preference | text; auto detects per input")
    text_unit: str = field("paragraph", help="plain text files: one record per line, paragraph or document")
    strict: bool = field(False, help="stop at the first malformed record instead of counting and reporting it")
    nfkc: bool = field(True, help="Unicode NFKC normalisation (folds ligatures and full-width forms)")
    html_to_text: str = field("text", help="HTML content to text: off, text (plain-text records only: chat "
                                           "answers may hold HTML code on purpose) or all")
    min_chars: int = field(1, help="drop records shorter than this many characters")
    max_chars: int = field(100_000, help="drop records longer than this many characters")
    tokenizer: str = field("whitespace", help="for token filters and the histogram: whitespace, tiny-arith "
                                              "(the built-in model's), or a tokenizer folder")
    min_tokens: int = field(0, help="drop records with fewer tokens (0 = off)")
    max_tokens: int = field(0, help="drop records with more tokens (0 = off)")
    gopher: bool = field(True, help="Gopher-style quality, repetition and boilerplate rules on long texts")
    gopher_min_words: int = field(50, help="texts with fewer words skip the Gopher rules (they judge prose)")
    languages: list[str] = field([], help="keep only these languages, e.g. [en, de] (needs py3langid); empty = off")
    language_min_score: float = field(0.5, help="minimum language-id probability to keep a record")
    redact_pii: bool = field(False, help="replace emails, IPs, phones, cards, IBANs and SSNs with [EMAIL] etc. "
                                         "(checksums and context: ordinary numbers stay)")
    dedup_exact: bool = field(True, help="drop records whose case/space-normalised text was seen before")
    dedup_near: bool = field(True, help="drop near-duplicates by MinHash LSH (datasketch); costs ~0.1 ms/record")
    near_threshold: float = field(0.8, help="Jaccard similarity from which records count as near-duplicates")
    ngram: int = field(5, help="shingle size for MinHash; smaller catches more rewording, and more false matches")
    shingle: str = field("word", help="MinHash shingles of words or chars")
    num_perm: int = field(128, help="MinHash permutations: more is more accurate and slower")
    validation_fraction: float = field(0.05, help="share of kept records for validation.jsonl")
    test_fraction: float = field(0.05, help="share of kept records for test.jsonl")
    seed: int = field(0, help="seed for the split")
    save_hf: bool = field(True, help="also write a Hugging Face DatasetDict (save_to_disk) under hf/")
    examples_per_reason: int = field(3, help="examples of each drop reason kept in the report")
    crawl_timeout: float = field(10.0, help="seconds per HTTP request when crawling URLs")
    crawl_max_bytes: int = field(5_000_000, help="largest page read when crawling; larger pages are dropped")
    user_agent: str = field("lifecycle-data/0.1", help="User-Agent sent, and matched against robots.txt")
    crawl_deadline: float = field(30.0, help="seconds for a whole page when crawling (slow servers are cut off)")
    crawl_allow_hosts: list[str] = field([], help="hosts a crawled page may redirect to besides its own")

    def __post_init__(self):
        if self.format not in ("auto", *formats.FORMATS):
            raise UserError(f"format must be auto or one of {', '.join(formats.FORMATS)}, got {self.format!r}")
        if self.html_to_text not in ("off", "text", "all"):
            raise UserError(f"html_to_text must be off, text or all, got {self.html_to_text!r}")
        if self.text_unit not in ("line", "paragraph", "document"):
            raise UserError(f"text_unit must be line, paragraph or document, got {self.text_unit!r}")
        if self.shingle not in ("word", "char"):
            raise UserError(f"shingle must be word or char, got {self.shingle!r}")
        if not 0 < self.near_threshold <= 1:
            raise UserError(f"near_threshold must be in (0, 1], got {self.near_threshold}")
        if self.ngram < 1 or self.num_perm < 16:
            raise UserError("ngram must be >= 1 and num_perm >= 16")
        if min(self.validation_fraction, self.test_fraction) < 0 or self.validation_fraction + self.test_fraction >= 1:
            raise UserError("validation_fraction and test_fraction must be >= 0 and sum to less than 1")
        if self.max_tokens and self.max_tokens < self.min_tokens:
            raise UserError(f"max_tokens ({self.max_tokens}) is below min_tokens ({self.min_tokens})")


class _Cleaner:
    """Per-record cleaning and filtering, in the order the report lists reasons."""

    def __init__(self, cfg: PrepareConfig, report: Report):
        self.cfg, self.report = cfg, report
        self.count_tokens = token_counter(cfg.tokenizer)
        self.rules = QualityRules(min_words=cfg.gopher_min_words)
        self.lang = LanguageId(cfg.languages) if cfg.languages else None
        self.dedup = Deduper(cfg.dedup_exact, cfg.dedup_near, cfg.near_threshold, cfg.ngram, cfg.shingle,
                             cfg.num_perm)

    def __call__(self, rec: dict, where: str) -> dict | None:
        """The cleaned record, or None after reporting why it was dropped."""
        cfg = self.cfg
        pii: Counter = Counter()
        html = cfg.html_to_text == "all" or (cfg.html_to_text == "text" and "text" in rec)

        def clean_text(text: str) -> str:
            if html and looks_like_html(text):
                text = html_to_text(text)
            text = normalise_text(text, cfg.nfkc)
            if cfg.redact_pii:
                text, counts = redact_pii(text)
                pii.update(counts)
            return text

        rec = formats.map_texts(rec, clean_text)
        text = formats.joined(rec)
        reason, detail, tokens = _empty_reason(rec), "", 0
        if reason is None and len(text) < cfg.min_chars:
            reason = "too_short"
        elif reason is None and len(text) > cfg.max_chars:
            reason = "too_long"
        if reason is None:
            tokens = self.count_tokens(text)
            if tokens < cfg.min_tokens:
                reason = "too_few_tokens"
            elif cfg.max_tokens and tokens > cfg.max_tokens:
                reason = "too_many_tokens"
        if reason is None and cfg.gopher:
            reason = quality_reason(text, self.rules)
        if reason is None and self.lang is not None:
            lang, prob = self.lang.classify(text)
            if lang not in self.lang.languages or prob < cfg.language_min_score:
                reason, detail = "language", f"{lang} p={prob:.2f}"
        if reason is None:
            reason, first = self.dedup.check(where, text)
            detail = f"duplicate of {first}" if first else ""
        if reason is not None:
            self.report.drop(reason, where, detail, text)
            return None
        self.report.pii.update(pii)  # replacements in the records kept
        self.report.keep(tokens)
        return rec


def _empty_reason(rec: dict) -> str | None:
    if not any(t.strip() for t in formats.texts(rec)):
        return "empty"
    if "messages" in rec and not any(m["role"] == "assistant" and m["content"].strip() for m in rec["messages"]):
        return "no_assistant_reply"
    if "chosen" in rec:
        for side in ("chosen", "rejected"):
            if not any(m["content"].strip() for m in formats.as_messages(rec[side], "assistant")):
                return "empty"
    return None


def _progress(total_bytes: int):
    """A rich progress bar for inputs over 4 MB (off under LIFECYCLE_NO_PROGRESS)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    disable = bool(os.environ.get("LIFECYCLE_NO_PROGRESS")) or total_bytes < 4_000_000
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("records"),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=disable, transient=True)


def _plan(cfg: PrepareConfig, report) -> list[tuple]:
    """(source, format) per input, formats detected from a peek at each file's head.

    Refuses inputs that mix record kinds (chat, preference, text) before any record is processed.
    """
    plan, kinds = [], {}
    for src in sources(cfg.inputs, report.skipped_files):
        fmt = cfg.format
        if fmt == "auto":
            if src.kind in TEXT_KINDS:
                fmt = "text"
            else:
                fmt = formats.detect(head(src, SAMPLE_FOR_DETECTION, cfg.text_unit))
        if fmt is not None:
            kinds.setdefault(formats.KIND[fmt], []).append(src.label)
        plan.append((src, fmt))
    if len(kinds) > 1:
        desc = "; ".join(f"{k}: {', '.join(v[:2])}" for k, v in kinds.items())
        raise UserError(f"inputs mix record kinds ({desc}); prepare each kind into its own dataset, "
                        "or pass --format")
    report.extra["kind"] = next(iter(kinds), None)
    return plan


def _estimate(plan: list[tuple]) -> tuple[int | None, int]:
    """(estimated record count or None, input bytes): line counts for JSONL/CSV, row counts for Parquet."""
    total: int | None = 0
    size = 0
    for src, _ in plan:
        if src.path is None or not src.path.is_file():
            total = None
            continue
        size += src.path.stat().st_size
        if src.kind in ("jsonl", "csv") and not src.path.name.endswith(".gz"):
            with open(src.path, "rb") as f:
                n = sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
        elif src.kind == "parquet":
            import pyarrow.parquet as pq

            n = pq.ParquetFile(src.path).metadata.num_rows
        else:
            n = None
        total = None if total is None or n is None else total + n
    return total, size


SPLITS = ("train", "validation", "test")


def _split_labels(n: int, cfg: PrepareConfig) -> bytearray:
    """Split index (0 train, 1 validation, 2 test) per kept record: exact counts, order drawn from the seed."""
    import random

    order = list(range(n))
    random.Random(cfg.seed).shuffle(order)
    n_test = round(n * cfg.test_fraction)
    n_val = round(n * cfg.validation_fraction)
    while n_val + n_test >= n and n_val + n_test > 0:  # keep at least one training record
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    labels = bytearray(n)
    for i in order[:n_val]:
        labels[i] = 1
    for i in order[n_val:n_val + n_test]:
        labels[i] = 2
    return labels


def _write_splits(staging: Path, folder: Path, labels: bytearray, unify: bool) -> dict[str, int]:
    """Stream the kept records from `staging` into train/validation/test.jsonl, in input order."""
    counts = dict.fromkeys(SPLITS, 0)
    files = [open(folder / f"{name}.jsonl", "w", encoding="utf-8") for name in SPLITS]
    try:
        with open(staging, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if unify:
                    line = json.dumps(formats.to_conversational(json.loads(line)), ensure_ascii=False) + "\n"
                files[labels[i]].write(line)
                counts[SPLITS[labels[i]]] += 1
    finally:
        for fh in files:
            fh.close()
    return counts


def _save_hf(folder: Path, split_dir: Path) -> None:
    """A DatasetDict read from the split JSONL files by Arrow (no Python copy of the records)."""
    try:
        import pyarrow.json as pj
        from datasets import Dataset, DatasetDict
        from datasets.utils.logging import disable_progress_bar
    except ImportError as e:
        from lifecycle.extras import install_hint

        raise UserError(f"save_hf needs datasets and pyarrow: {install_hint(e.name or 'datasets')}; "
                        "or --set save_hf=false") from None
    disable_progress_bar()
    tables = {}
    for name in SPLITS:
        path = split_dir / f"{name}.jsonl"
        if path.stat().st_size:
            longest = max(len(line) for line in open(path, "rb"))
            opts = pj.ReadOptions(block_size=max(1 << 20, 2 * longest))
            tables[name] = pj.read_json(path, read_options=opts)
    schema = tables["train"].schema
    dd = DatasetDict({name: Dataset(tables.get(name, schema.empty_table())) for name in SPLITS})
    # An empty split needs one (empty) shard, or load_from_disk cannot read it back.
    dd.save_to_disk(str(folder), num_shards={name: 1 for name in SPLITS if name not in tables})


def process(cfg: PrepareConfig, report: Report, sink) -> bool:
    """Read, normalise, clean, filter and dedup, writing kept records as JSON lines to `sink`.

    Every record read is counted in `report`. Returns whether any kept preference record is conversational.
    """
    plan = _plan(cfg, report)
    crawl = CrawlOptions(cfg.crawl_timeout, cfg.crawl_max_bytes, cfg.user_agent, cfg.crawl_deadline,
                         tuple(cfg.crawl_allow_hosts))
    clean = _Cleaner(cfg, report)
    conversational = False
    total, size = _estimate(plan)
    with _progress(size) as bar:
        task = bar.add_task("preparing", total=total)
        for src, fmt in plan:
            for item in read(src, cfg.text_unit, crawl):
                report.read += 1
                bar.advance(task)
                error = item.error
                if error is None and fmt is None:
                    keys = ", ".join(sorted(item.obj)[:6]) if isinstance(item.obj, dict) else type(item.obj).__name__
                    error = f"format not recognised (fields: {keys}); pass --format"
                if error is None:
                    try:
                        rec = formats.normalise(item.obj, fmt)
                    except formats.FormatError as e:
                        error = f"{fmt} record: {e}"
                if error is not None:
                    if cfg.strict and item.reason == "malformed":
                        raise UserError(f"{item.where}: {error} (strict mode; drop --strict to count and skip)")
                    report.drop(item.reason, item.where, error)
                    continue
                out = clean(rec, item.where)
                if out is not None:
                    sink.write(json.dumps(out, ensure_ascii=False) + "\n")
                    conversational = conversational or formats.is_conversational(out)
            report.formats[src.label] = fmt
            report.extra.setdefault("inputs", []).append(src.manifest())
    report.clusters = clean.dedup.clusters()
    report.check()
    return conversational


def run(cfg: PrepareConfig, out: Path, overwrite: bool = False) -> Path:
    """Prepare the dataset artifact at `out`; print and write the report. Nothing is left at `out` on failure."""
    import time

    from lifecycle.artifact import write_artifact
    from lifecycle.config import to_dict

    start = time.perf_counter()
    report = Report(examples_per_reason=cfg.examples_per_reason)
    metrics: dict = {}
    extra: dict = {}
    with write_artifact(out, format=DATASET_FORMAT, stage="data-prepare", options=to_dict(cfg),
                        metrics=metrics, extra=extra, overwrite=overwrite) as tmp:
        staging = tmp / ".kept.jsonl"
        with open(staging, "w", encoding="utf-8") as sink:
            conversational = process(cfg, report, sink)
        if not report.kept:
            report.print()
            raise UserError(f"no record survived ({report.read} read, all dropped); see the reasons above "
                            "and loosen the filters")
        unify = conversational and report.extra.get("kind") == "preference"
        report.splits = _write_splits(staging, tmp, _split_labels(report.kept, cfg), unify)
        staging.unlink()
        if cfg.save_hf:
            _save_hf(tmp / "hf", tmp)
        report.extra["seconds"] = round(time.perf_counter() - start, 3)
        report.write(tmp, cfg.tokenizer)
        metrics.update({"read": report.read, "kept": report.kept, "dropped": report.dropped_total,
                        **{f"records_{k}": v for k, v in report.splits.items()}})
        extra.update({"kind": report.extra.get("kind"), "splits": report.splits,
                      "inputs": report.extra.get("inputs", [])})
    report.print()
    return out
