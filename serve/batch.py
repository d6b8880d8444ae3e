"""Offline batch inference over a JSONL file: resumable, order-preserving, failures reported per line.

    lifecycle batch --model tiny-arith --input in.jsonl --output out.jsonl
    lifecycle batch --model tiny-arith --input in.jsonl --output out.jsonl --ray   # on Ray Data

Each input line is `{"messages": [...]}` (chat) or `{"prompt": "..."}`, with optional `id`, `max_tokens`,
`temperature`, `top_p`, `stop`, `seed`. Output line i answers input line i:
`{"line", "id", "text", "finish_reason", "usage"}` or `{"line", "id", "error"}`. Output is appended and
flushed chunk by chunk, so a killed run resumes after its last complete line.

Input lines are split on "\n" only (`lifecycle.readers`): a prompt holding U+2028 is one line, and a line
that is not UTF-8, not JSON or nested too deep gets its own error record, so output line i is input line i.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from lifecycle.engine import Completion, Prompt, SamplingParams
from lifecycle.errors import UserError
from serve import protocol as P


def _parse_line(raw: str, max_tokens: int, temperature: float) -> tuple[Prompt, SamplingParams, object]:
    from lifecycle.readers import parse

    data, error = parse(raw)
    if error is not None:
        raise P.APIError(400, error)
    if not isinstance(data, dict):
        raise P.APIError(400, "line must be a JSON object")
    data = {"temperature": temperature, "model": "batch", **data}  # batch runs one model: a line need not name it
    req = P.validate(P.ChatRequest if "messages" in data else P.CompletionRequest, data)
    prompts = req.prompts()
    if len(prompts) != 1 or req.n != 1:
        raise P.APIError(400, "one prompt and n=1 per line")
    return prompts[0], req.sampling(max_tokens), data.get("id")


def _line_id(raw: str | None) -> object:
    from lifecycle.readers import parse

    data, _ = parse(raw) if raw is not None else (None, None)
    return data.get("id") if isinstance(data, dict) else None


def _done_lines(output: Path) -> int:
    """Complete lines already in the output; a torn last line (killed mid-write) is cut off."""
    if not output.exists():
        return 0
    data = output.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with open(output, "r+b") as f:
            f.truncate(keep)
    return data[:keep].count(b"\n")


def _chunks(lines: list[str], size: int) -> Iterator[tuple[int, list[str]]]:
    for start in range(0, len(lines), size):
        yield start, lines[start: start + size]


def process_chunk(host, start: int, lines: list[str | None], max_tokens: int, temperature: float,
                  errors: list[str] | None = None) -> list[dict]:
    """Results for consecutive input lines, in order. Any failure becomes that line's error record;
    `errors[i]` (when given and not empty) is why line i could not be read at all."""
    records: list[dict | None] = [None] * len(lines)
    todo: list[tuple[int, Prompt, SamplingParams, object, int]] = []
    for i, raw in enumerate(lines):
        if raw is None or (errors and errors[i]):
            records[i] = {"line": start + i, "id": None, "error": (errors[i] if errors else "") or "unreadable line"}
            continue
        try:
            prompt, params, rid = _parse_line(raw, max_tokens, temperature)
            todo.append((i, prompt, params, rid, host.prompt_tokens(prompt, params)))
        except Exception as e:
            records[i] = {"line": start + i, "id": _line_id(raw), "error": _message(e)}
    outs = host.generate_batch([t[1] for t in todo], [t[2] for t in todo]) if todo else []
    for (i, _, _, rid, ptoks), out in zip(todo, outs):
        if isinstance(out, Completion):
            records[i] = {"line": start + i, "id": rid, "text": out.text, "finish_reason": out.finish_reason,
                          "usage": P.usage(ptoks, out.completion_tokens)}
        else:
            records[i] = {"line": start + i, "id": rid, "error": _message(out)}
    return records  # type: ignore[return-value]


def _message(e: BaseException) -> str:
    if isinstance(e, P.APIError):
        return e.message
    if isinstance(e, (UserError, json.JSONDecodeError)):
        return f"{type(e).__name__}: {e}" if isinstance(e, json.JSONDecodeError) else str(e)
    return f"{type(e).__name__}: {e}"


def run_batch(model: str, input: Path, output: Path, max_tokens: int = 64, temperature: float = 0.0,
              batch_size: int = 16, threads: int = 1, use_ray: bool = False, restart: bool = False) -> dict:
    if not Path(input).is_file():
        raise UserError(f"--input {input}: file not found")
    if batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    from lifecycle.readers import read_lines

    read = list(read_lines(Path(input)))
    lines = [ln.text for ln in read]
    errors = [ln.error or "" for ln in read]
    output = Path(output)
    if restart and output.exists():
        output.unlink()
    done = _done_lines(output)
    if done > len(lines):
        raise UserError(f"{output} has {done} lines but {input} only {len(lines)}: wrong pair? use --restart")
    todo, todo_errors = lines[done:], errors[done:]
    from serve.host import parse_model_spec

    spec = parse_model_spec(model)
    if use_ray:
        records_iter = _ray_records(spec, todo, todo_errors, done, max_tokens, temperature, batch_size, threads)
    else:
        records_iter = _local_records(spec, todo, todo_errors, done, max_tokens, temperature, batch_size, threads)
    failed = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a") as f:
        for chunk in records_iter:
            for rec in chunk:
                failed += "error" in rec
                f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
    summary = {"lines": len(lines), "resumed_after": done, "processed": len(todo), "failed": failed}
    print(json.dumps(summary))
    return summary


def _local_records(spec, todo, todo_errors, done, max_tokens, temperature, batch_size, threads):
    from serve.host import EngineHost, load_model

    host = EngineHost(load_model(spec, threads), spec["name"], max_batch_size=batch_size)
    try:
        for start, chunk in _chunks(todo, batch_size):
            yield process_chunk(host, done + start, chunk, max_tokens, temperature,
                                todo_errors[start: start + batch_size])
    finally:
        host.close()


class _RayChunk:
    """Ray Data stateful UDF: one engine per actor, a batch of raw lines in, records (as JSON) out."""

    def __init__(self, spec: dict, threads: int, max_tokens: int, temperature: float):
        from serve.host import EngineHost, load_model

        self.host = EngineHost(load_model(spec, threads), spec["name"])
        self.max_tokens, self.temperature = max_tokens, temperature

    def __call__(self, batch: dict) -> dict:
        lines, index = [str(x) for x in batch["raw"]], [int(i) for i in batch["line"]]
        errors = [str(x) for x in batch["error"]]
        recs = process_chunk(self.host, 0, lines, self.max_tokens, self.temperature, errors)
        for rec, i in zip(recs, index):
            rec["line"] = i
        return {"line": index, "record": [json.dumps(r) for r in recs]}


def _ray_records(spec, todo, todo_errors, done, max_tokens, temperature, batch_size, threads):
    """Ray Data path: map_batches on an engine actor, order preserved, written batch by batch."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(include_dashboard=False, object_store_memory=100 << 20, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        ds = ray.data.from_items([{"line": done + i, "raw": raw or "", "error": err}
                                  for i, (raw, err) in enumerate(zip(todo, todo_errors))])
        out = ds.map_batches(_RayChunk, fn_constructor_args=(spec, threads, max_tokens, temperature),
                             batch_size=batch_size, concurrency=1, num_cpus=0.5)
        for b in out.iter_batches(batch_size=batch_size, batch_format="numpy"):
            yield [json.loads(r) for r in b["record"]]
    finally:
        if started:
            ray.shutdown()
