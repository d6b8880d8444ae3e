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


def test_fuzz_every_input_line_gets_one_output_line_in_order(tmp_path_factory):
    """Random lines (valid requests holding U+2028/NUL/RTL marks raw, lone surrogates escaped, bad bytes, cut
    JSON, deep nesting, blank lines, CRLF, a BOM): output line i always answers input line i."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    examples = int(os.environ.get("LIFECYCLE_FUZZ_EXAMPLES", "60"))
    special = st.sampled_from(["\u2028", "\u2029", "\x85", "\x00", "\u200f", "\u202e", "\ufeff", "\r", "\n",
                               "\ud800"])
    text = st.one_of(st.text(st.one_of(st.characters(exclude_categories=("Cs",)), special), max_size=20),
                     st.just("fail here"))  # the mock engine raises on the word "fail"
    request = st.one_of(st.fixed_dictionaries({"prompt": text}, optional={"id": st.one_of(text, st.integers()),
                                                                           "max_tokens": st.integers(-2, 4)}),
                        st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries(
                            {"role": st.sampled_from(["user", "assistant", "system", "bogus"]),
                             "content": st.one_of(text, st.integers())}), max_size=3)}))

    @st.composite
    def line(draw):
        kind = draw(st.sampled_from(["request", "request", "garbage", "cut", "deep", "blank"]))
        if kind == "request":
            return json.dumps(draw(request), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
        if kind == "garbage":
            return draw(st.binary(max_size=20)).replace(b"\n", b" ")
        if kind == "cut":
            raw = json.dumps(draw(request), ensure_ascii=False).encode("utf-8", "surrogatepass")
            return raw[: draw(st.integers(0, len(raw)))]
        if kind == "deep":
            return b"[" * 5000 + b"]" * 5000
        return b""

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(lines=st.lists(line(), max_size=10), crlf=st.booleans(), bom=st.booleans())
    def check(lines, crlf, bom):
        folder = tmp_path_factory.mktemp("fz")
        src, out = folder / "in.jsonl", folder / "out.jsonl"
        data = (b"\xef\xbb\xbf" if bom else b"") + b"".join(x + (b"\r\n" if crlf else b"\n") for x in lines)
        src.write_bytes(data)
        summary = run_batch("mock", src, out, max_tokens=3, batch_size=4)
        recs = [json.loads(x) for x in out.read_bytes().split(b"\n")[:-1]]
        assert summary["lines"] == len(lines) == len(recs)
        assert [r["line"] for r in recs] == list(range(len(lines)))
        assert summary["failed"] == sum("error" in r for r in recs)

    check()


def test_u2028_in_a_prompt_is_one_line(tmp_path):
    """json.dumps(ensure_ascii=False) writes U+2028 raw; it used to split the line into two JSON errors."""
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"prompt": "a\u2028b"}, ensure_ascii=False) + "\n"
                   + json.dumps({"id": "x", "prompt": "c d"}) + "\n", encoding="utf-8")
    summary = run_batch("mock", src, out, max_tokens=2)
    recs = _read(out)
    assert summary["lines"] == 2 and summary["failed"] == 0
    assert [r["line"] for r in recs] == [0, 1] and recs[1]["id"] == "x"
