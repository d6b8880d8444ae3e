"""`lifecycle batch`: order kept, failures per line, resume after a kill, and the Ray Data path.

    python -m pytest tests/test_serve_batch.py -q
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from lifecycle.engine import SamplingParams
from lifecycle.errors import UserError
from serve.batch import run_batch

pytestmark = pytest.mark.integration

LINES = [
    {"id": "a", "messages": [{"role": "user", "content": "What is 2+3?"}]},
    {"prompt": "12+34=", "max_tokens": 6},
    "not json",
    {"id": "neg", "prompt": "x", "temperature": -1},
    {"id": "long", "messages": [{"role": "user", "content": "1+1 " * 200}]},
    {"id": 6, "prompt": "7+8=", "max_tokens": 6},
    {"prompt": "9+9=", "max_tokens": 6, "stop": ["\n"]},
]


@pytest.fixture
def infile(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in LINES))
    return path


def _read(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_order_and_failures_per_line(infile, tmp_path, hf_engine):
    out = tmp_path / "out.jsonl"
    summary = run_batch("tiny-arith", infile, out, max_tokens=12, batch_size=3)
    recs = _read(out)
    assert [r["line"] for r in recs] == list(range(len(LINES)))
    assert summary == {"lines": 7, "resumed_after": 0, "processed": 7, "failed": 3}
    assert [("error" in r) for r in recs] == [False, False, True, True, True, False, False]
    assert recs[3]["id"] == "neg" and "temperature" in recs[3]["error"]
    assert "context length" in recs[4]["error"]
    # each answer is what the engine gives for that line alone
    [ref] = hf_engine.generate([LINES[0]["messages"]], SamplingParams(max_tokens=12, temperature=0))
    assert recs[0]["text"] == ref.text and recs[0]["id"] == "a"
    [ref] = hf_engine.generate(["7+8="], SamplingParams(max_tokens=6, temperature=0))
    assert recs[5]["text"] == ref.text and recs[5]["usage"]["completion_tokens"] == ref.completion_tokens
    assert "\n" not in recs[6]["text"]


def test_resume_after_a_kill(infile, tmp_path):
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    run_batch("tiny-arith", infile, full, max_tokens=12, batch_size=2)
    lines = full.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:3]) + lines[3][:10])  # killed while writing line 3
    summary = run_batch("tiny-arith", infile, part, max_tokens=12, batch_size=2)
    assert summary["resumed_after"] == 3 and summary["processed"] == 4
    assert part.read_text() == full.read_text()
    assert run_batch("tiny-arith", infile, part)["processed"] == 0  # complete: nothing to do
    assert run_batch("tiny-arith", infile, part, max_tokens=12, restart=True)["resumed_after"] == 0


def test_input_errors(tmp_path, infile):
    with pytest.raises(UserError, match="not found"):
        run_batch("tiny-arith", tmp_path / "missing.jsonl", tmp_path / "o.jsonl")
    longer = tmp_path / "longer.jsonl"
    longer.write_text("{}\n" * 20)
    with pytest.raises(UserError, match="wrong pair"):
        run_batch("tiny-arith", infile, longer)


def test_ray_data_path_matches_local(infile, tmp_path):
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    run_batch("tiny-arith", infile, local, max_tokens=12, batch_size=3)
    ray_tmp = tempfile.mkdtemp(prefix="rb", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "OMP_NUM_THREADS": "1"}
    try:
        r = subprocess.run([sys.executable, "-m", "lifecycle.cli", "batch", "--model", "tiny-arith", "--input",
                            str(infile), "--output", str(on_ray), "--max-tokens", "12", "--batch-size", "3", "--ray"],
                           env=env, capture_output=True, text=True, timeout=180)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert on_ray.read_text() == local.read_text()
