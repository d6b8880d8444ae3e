"""`lifecycle ship` with a `pretrain:` section: the continued-pretraining stage runs once, is reused from the
stage cache, runs again when the corpus changes, and its section is checked before anything runs."""

import shutil
from pathlib import Path

import pytest

from lifecycle.errors import UserError
from lifecycle.release.config import ShipConfig

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "corpus" / "subtraction.jsonl"
SECTION = {"max_steps": 4, "batch_size": 4, "seq_len": 32, "eval_blocks": 4}


@pytest.mark.integration
def test_pretrain_stage_is_cached_by_corpus_content(tmp_path, base_artifact, torch_one_thread):
    from lifecycle.release.cache import StageCache
    from lifecycle.release.stages import Runner

    corpus = tmp_path / "corpus.jsonl"
    shutil.copyfile(CORPUS, corpus)
    cfg = ShipConfig(pretrain={**SECTION, "data": str(corpus)}, threads=1, bench={"enabled": False})
    lines = []
    with StageCache(tmp_path / "cache") as cache:
        runs = [Runner(cfg, cache, tmp_path / f"work{i}", lines.append) for i in range(3)]
        first = runs[0].pretrain(base_artifact, cfg.pretrain)
        again = runs[1].pretrain(base_artifact, cfg.pretrain)
        with corpus.open("a") as f:
            f.write('{"text": "99-9=90"}\n')
        changed = runs[2].pretrain(base_artifact, cfg.pretrain)
    records = [r.records[0] for r in runs]
    assert [r["cached"] for r in records] == [False, True, False]
    assert records[0]["key"] == records[1]["key"] != records[2]["key"]
    assert first.path == again.path and first.format == "hf" and changed.path != first.path
    assert first.parent["sha256"] == base_artifact.manifest_sha256
    assert set(records[0]["metrics"]) >= {"heldout_perplexity_before", "heldout_perplexity_after"}
    assert (tmp_path / "work0" / "artifacts" / "pretrain" / "manifest.json").is_file()


@pytest.mark.unit
@pytest.mark.parametrize("section, message", [
    ({"max_steps": 5}, "needs data"),
    ({"data": str(CORPUS), "method": "lora"}, "method must be full"),
    ({"data": str(CORPUS), "model": "x"}, "set by ship"),
    ({"data": str(CORPUS), "max_stepz": 5}, "max_stepz"),
    ("corpus.jsonl", "must be a mapping"),
])
def test_bad_pretrain_section_is_one_line(section, message):
    with pytest.raises(UserError, match=message) as err:
        ShipConfig(pretrain=section)
    assert "\n" not in str(err.value)
