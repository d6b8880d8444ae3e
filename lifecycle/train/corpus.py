"""A user's pretraining corpus, streamed from disk with HF datasets and packed into fixed-length blocks.

    docs = documents("corpus/")                       # .txt / .jsonl files, a folder of shards, or a dataset artifact
    train, heldout = split(docs, every=20)            # every 20th document is held out
    blocks = pack(train, tok, seq_len=256)            # {"input_ids", "labels"}: seq_len tokens each, no padding

Nothing is loaded whole: `datasets` streams the files (`streaming=True`), so memory stays bounded by the
shuffle buffer and one packing batch whatever the corpus size. Plain text is split into documents at blank
lines (`unit="paragraph"`) or at every line (`unit="line"`); JSONL documents are one object per line with a
text field. Each document is followed by the tokenizer's EOS (and preceded by BOS where the tokenizer adds one), and
the token stream is cut into blocks of exactly `seq_len`; as in transformers' run_clm recipe, the tail of
each batch of `PACK_BATCH` documents that does not fill a block is dropped (under one block per batch).
"""

from __future__ import annotations

from pathlib import Path

from lifecycle.errors import UserError

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSON_SUFFIXES = (".jsonl", ".json")
PACK_BATCH = 1000
UNITS = ("paragraph", "line")


def corpus_files(spec: str) -> tuple[str, list[str]]:
    """('text' | 'json', files) for a file, a folder of shards, or a `lifecycle data prepare` artifact."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"corpus {spec} not found; pass a .txt or .jsonl file, a folder of them, or a dataset artifact")
    if path.is_dir():
        if (path / "manifest.json").is_file():
            from lifecycle.artifact import Artifact

            art = Artifact.load(path)
            if not (art.path / "train.jsonl").is_file():
                raise UserError(f"dataset artifact {art.path} has no train.jsonl")
            return "json", [str(art.path / "train.jsonl")]
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES + JSON_SUFFIXES)
        if not files:
            raise UserError(f"corpus folder {spec} holds no .txt, .md or .jsonl files")
        kinds = {p.suffix in JSON_SUFFIXES for p in files}
        if len(kinds) > 1:
            raise UserError(f"corpus folder {spec} mixes text and JSONL files; keep one kind per corpus")
        return ("json" if kinds.pop() else "text"), [str(p) for p in files]
    if path.stat().st_size == 0:
        raise UserError(f"corpus {spec} is empty")
    return ("json" if path.suffix in JSON_SUFFIXES else "text"), [str(path)]


def corpus_sha256(spec: str) -> str:
    """One sha256 over the corpus's files (their names within the corpus and their contents): a cache key."""
    import hashlib

    from lifecycle.artifact import sha256_file

    _, files = corpus_files(spec)
    root = Path(spec).expanduser().resolve()
    h = hashlib.sha256()
    for f in files:
        path = Path(f).resolve()
        name = path.relative_to(root) if path.is_relative_to(root) and path != root else path.name
        h.update(f"{name}\0{sha256_file(Path(f))}\n".encode())
    return h.hexdigest()


def documents(spec: str, text_field: str = "text", unit: str = "paragraph"):
    """A streaming `IterableDataset` with one column, `text`: the corpus's documents in file order."""
    if unit not in UNITS:
        raise UserError(f"text unit '{unit}' is unknown; use one of {', '.join(UNITS)}")
    kind, files = corpus_files(spec)  # a bad path is one line, before the heavy import
    from datasets import load_dataset

    if kind == "text":
        ds = load_dataset("text", data_files=files, split="train", streaming=True, sample_by=unit)
        return ds.map(lambda row: {"text": row["text"].strip()}).filter(lambda row: bool(row["text"]))
    ds = load_dataset("json", data_files=files, split="train", streaming=True)
    try:
        first = next(iter(ds))
    except StopIteration:
        raise UserError(f"corpus {spec} holds no JSON records") from None
    except Exception as exc:  # a malformed first line: pyarrow's JSON reader error, in one line
        raise UserError(f"corpus {spec}: cannot read JSONL ({str(exc).splitlines()[0]})") from None
    if text_field not in first:
        raise UserError(f"corpus {spec}: records have no '{text_field}' field (fields: {', '.join(first)}); "
                        f"pass --set text_field=NAME")
    ds = ds.select_columns([text_field])
    if text_field != "text":
        ds = ds.rename_column(text_field, "text")
    return ds.filter(lambda row: isinstance(row["text"], str) and bool(row["text"].strip()))


def split(docs, every: int):
    """(train, heldout): every `every`-th document (by position) is held out, the rest train."""
    if every < 2:
        raise UserError("heldout_every must be >= 2 (every N-th document is held out)")
    train = docs.filter(lambda _, i: i % every != every - 1, with_indices=True)
    heldout = docs.filter(lambda _, i: i % every == every - 1, with_indices=True)
    return train, heldout


def pack(docs, tok, seq_len: int):
    """Tokenize documents, join them with EOS (BOS before each, if the tokenizer has one) and cut the stream
    into `seq_len`-token blocks; labels equal input_ids (the model shifts them)."""
    eos = tok.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no EOS token to put between documents")
    bos = tok.bos_token_id
    adds_bos = bos is not None and tok("a")["input_ids"][:1] == [bos]  # as the tokenizer itself does
    prefix = [bos] if adds_bos and bos != eos else []

    def group(batch):
        ids = tok(batch["text"], add_special_tokens=False)["input_ids"]
        stream = [t for doc in ids for t in prefix + doc + [eos]]
        n = len(stream) // seq_len * seq_len
        blocks = [stream[i:i + seq_len] for i in range(0, n, seq_len)]
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]}

    return docs.map(group, batched=True, batch_size=PACK_BATCH, remove_columns=["text"])


def take_blocks(blocks, n: int) -> list[dict]:
    """The first `n` packed blocks as a list (for the held-out evaluation set)."""
    from itertools import islice

    return list(islice(iter(blocks), n))


def tokenizer_lines(docs, max_lines: int):
    """Up to `max_lines` non-empty lines from the documents, for training a tokenizer."""
    count = 0
    for row in docs:
        for line in row["text"].splitlines():
            if line.strip():
                yield line
                count += 1
                if count >= max_lines:
                    return
