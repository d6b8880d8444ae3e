"""Artifact manifests: atomic writes, lineage, and refusal of tampered or incomplete artifacts."""

import json

import pytest

from lifecycle.artifact import MANIFEST, Artifact, sha256_file, write_artifact
from lifecycle.errors import UserError

pytestmark = pytest.mark.unit


def _make(tmp_path, name="a", parent=None):
    with write_artifact(tmp_path / name, format="hf", stage="test", parent=parent, options={"x": 1},
                        metrics={"m": 0.5}) as tmp:
        (tmp / "weights.bin").write_bytes(b"\x00\x01" * 100)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "tok.json").write_text('{"a": 1}')
    return Artifact.load(tmp_path / name)


def test_manifest_fields_and_hashes(tmp_path):
    art = _make(tmp_path)
    m = art.manifest
    assert m["format"] == "hf" and m["parent"] is None and m["metrics"] == {"m": 0.5}
    assert m["created_by"]["stage"] == "test" and m["created_by"]["options"] == {"x": 1}
    assert set(art.files) == {"weights.bin", "sub/tok.json"}
    assert art.files["weights.bin"] == sha256_file(art.path / "weights.bin")
    assert art.size_bytes() == 200 + len('{"a": 1}')


def test_parent_records_path_and_manifest_sha(tmp_path):
    parent = _make(tmp_path, "p")
    child = _make(tmp_path, "c", parent=parent)
    assert child.parent["path"] == str(parent.path)
    assert child.parent["sha256"] == sha256_file(parent.path / MANIFEST)


def test_tampered_file_is_refused(tmp_path):
    art = _make(tmp_path)
    (art.path / "weights.bin").write_bytes(b"\xff" * 200)
    with pytest.raises(UserError, match="sha256 mismatch for 'weights.bin'"):
        Artifact.load(art.path)
    assert Artifact.load(art.path, verify=False).format == "hf"


def test_missing_file_is_refused(tmp_path):
    art = _make(tmp_path)
    (art.path / "sub" / "tok.json").unlink()
    with pytest.raises(UserError, match="'sub/tok.json' listed in the manifest is missing"):
        Artifact.load(art.path)


def test_not_an_artifact_and_bad_json(tmp_path):
    with pytest.raises(UserError, match="not an artifact"):
        Artifact.load(tmp_path)
    (tmp_path / MANIFEST).write_text("{broken")
    with pytest.raises(UserError, match="not valid JSON"):
        Artifact.load(tmp_path)


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with write_artifact(tmp_path / "x", format="hf", stage="t") as tmp:
            (tmp / "half.bin").write_bytes(b"1")
            raise RuntimeError("killed mid-stage")
    assert list(tmp_path.iterdir()) == []


def test_existing_destination_needs_overwrite(tmp_path):
    _make(tmp_path)
    with pytest.raises(UserError, match="already exists"):
        with write_artifact(tmp_path / "a", format="hf", stage="t"):
            pass
    with write_artifact(tmp_path / "a", format="gguf", stage="t", overwrite=True) as tmp:
        (tmp / "f").write_text("new")
    art = Artifact.load(tmp_path / "a")
    assert art.format == "gguf" and set(art.files) == {"f"}
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_update_metrics_keeps_manifest_valid(tmp_path):
    art = _make(tmp_path)
    art.update_metrics({"exact_match": 0.9})
    again = Artifact.load(art.path)
    assert again.metrics == {"m": 0.5, "exact_match": 0.9}
    assert json.loads((art.path / MANIFEST).read_text())["files"] == art.files


def _age(path, seconds=10):
    """Pretend a file was written `seconds` ago (the memo trusts only settled files)."""
    import os
    import time

    past = time.time() - seconds
    os.utime(path, (past, past))


def test_verified_hashes_are_remembered_until_a_file_changes(tmp_path, monkeypatch):
    import lifecycle.artifact as A

    art = _make(tmp_path)
    for rel in art.files:
        _age(art.path / rel)
    reads = []
    real = A.sha256_file
    monkeypatch.setattr(A, "sha256_file", lambda p, *a: reads.append(p.name) or real(p, *a))
    Artifact.load(art.path)  # settled files: hashed once more, now remembered
    first = len(reads)
    Artifact.load(art.path)
    assert first == 2 and len(reads) == first  # nothing is read again
    Artifact.load(art.path, verify="full")  # a full check reads every file again
    assert reads.count("weights.bin") == 2
    (art.path / "weights.bin").write_bytes(b"\xff" * 200)  # same size, new mtime: re-read and refused
    with pytest.raises(UserError, match="sha256 mismatch"):
        Artifact.load(art.path)


def test_a_fresh_file_is_not_trusted_from_the_memo(tmp_path):
    """An edit within the timestamp granularity of the first hash must not be missed ("racy git")."""
    import os

    art = _make(tmp_path)
    Artifact.load(art.path)
    st = os.stat(art.path / "weights.bin")
    (art.path / "weights.bin").write_bytes(b"\xff" * 200)
    os.utime(art.path / "weights.bin", ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime as hashed
    with pytest.raises(UserError, match="sha256 mismatch"):
        Artifact.load(art.path)
