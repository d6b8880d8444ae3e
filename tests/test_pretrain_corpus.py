"""Reading, splitting and packing a user's pretraining corpus (lifecycle.train.corpus), and the pretrain
config's one-line errors. The built-in SentencePiece tokenizer is loaded (no model)."""

import json

import pytest

from lifecycle.errors import UserError
from lifecycle.train import corpus
from lifecycle.train.pretrain import PretrainConfig

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tok():
    from lifecycle.models import resolve
    from lifecycle.train.tokenizer import load_tokenizer

    return load_tokenizer(resolve("tiny-arith").path)


def texts(ds):
    return [row["text"] for row in ds]


def test_plain_text_paragraphs_and_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("one a\none b\n\n\ntwo\n\nthree\n")
    assert texts(corpus.documents(str(path))) == ["one a\none b", "two", "three"]
    assert texts(corpus.documents(str(path), unit="line")) == ["one a", "one b", "two", "three"]


def test_jsonl_text_field_and_errors(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps({"body": f"doc {i}", "id": i}) for i in range(5)) + "\n")
    assert texts(corpus.documents(str(path), text_field="body")) == [f"doc {i}" for i in range(5)]
    with pytest.raises(UserError, match="no 'text' field.*text_field"):
        corpus.documents(str(path))
    with pytest.raises(UserError, match="not found"):
        corpus.documents(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="empty"):
        corpus.documents(str(tmp_path / "empty.txt"))


def test_folder_of_shards_and_dataset_artifact(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(3):
        (shards / f"part-{i}.txt").write_text(f"shard {i}\n")
    assert texts(corpus.documents(str(shards))) == ["shard 0", "shard 1", "shard 2"]
    (shards / "extra.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(UserError, match="mixes"):
        corpus.documents(str(shards))

    from lifecycle.artifact import write_artifact

    with write_artifact(tmp_path / "ds", format="dataset", stage="data") as tmp:
        (tmp / "train.jsonl").write_text('{"text": "from an artifact"}\n')
    assert texts(corpus.documents(str(tmp_path / "ds"))) == ["from an artifact"]


def test_split_is_disjoint_and_complete(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(f"doc {i}" for i in range(40)) + "\n")
    train, heldout = corpus.split(corpus.documents(str(path), unit="line"), every=10)
    held = texts(heldout)
    assert held == ["doc 9", "doc 19", "doc 29", "doc 39"]
    assert sorted(texts(train) + held) == sorted(f"doc {i}" for i in range(40))


def test_pack_fixed_blocks_with_eos_between_documents(tmp_path, tok):
    docs = [f"{a}-{b}={a - b}" for a, b in zip(range(50, 90), range(10, 50))]
    path = tmp_path / "c.txt"
    path.write_text("\n".join(docs) + "\n")
    blocks = list(corpus.pack(corpus.documents(str(path), unit="line"), tok, seq_len=16))
    assert blocks and all(len(b["input_ids"]) == 16 and b["labels"] == b["input_ids"] for b in blocks)
    stream = [t for b in blocks for t in b["input_ids"]]
    expected = []
    for d in docs:
        expected += [tok.bos_token_id] + tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert stream == expected[:len(stream)]  # the same token stream, only the last partial block dropped
    assert len(expected) - len(stream) < 16
    assert stream.count(tok.eos_token_id) >= len(stream) // len(expected[:len(expected) // len(docs)]) - 1


def test_documents_stream_lazily(tmp_path):
    from datasets import IterableDataset

    path = tmp_path / "c.txt"
    path.write_text("a\n\nb\n")
    assert isinstance(corpus.documents(str(path)), IterableDataset)


@pytest.mark.parametrize("kw, message", [
    (dict(model="tiny-arith"), "needs a corpus"),
    (dict(data="x.txt", method="lora"), "LoRA needs a model"),
    (dict(data="x.txt", method="qlora"), "unknown"),
    (dict(data="x.txt", preset="micro", seq_len=512), "exceeds preset"),
    (dict(preset="huge"), "unknown preset"),
])
def test_config_errors_are_one_line(kw, message):
    with pytest.raises(UserError, match=message) as err:
        PretrainConfig(**kw)
    assert "\n" not in str(err.value)
