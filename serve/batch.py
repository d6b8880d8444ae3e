"""Offline batch inference over a JSONL file: resumable, order-preserving, failures reported per line.

    lifecycle batch --model tiny-arith --input in.jsonl --output out.jsonl
    lifecycle batch --model tiny-arith --input in.jsonl --output out.jsonl --ray   # on Ray Data
    lifecycle batch ... --ray --ray-address 127.0.0.1:6379 --actors 4             # on a running cluster

Each input line is `{"messages": [...]}` (chat) or `{"prompt": "..."}`, with optional `id`, `max_tokens`,
`temperature`, `top_p`, `stop`, `seed`. Output line i answers input line i:
`{"line", "id", "text", "finish_reason", "usage"}` or `{"line", "id", "error"}`. Output is appended and
flushed chunk by chunk, so a killed run resumes after its last complete line. The input is streamed, never
read whole: on Ray, one read task on this node feeds `--actors` engine actors spread over the cluster, and
the output is byte for byte the local path's for greedy decoding (same batches, same order).

Input lines are split on "\n" only (`lifecycle.readers`): a prompt holding U+2028 is one line, and a line
that is not UTF-8, not JSON or nested too deep gets its own error record, so output line i is input line i.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Iterator

from lifecycle.engine import Completion, Prompt, SamplingParams
from lifecycle.errors import UserError
from serve import protocol as P

ACTOR_START_S = 300  # how long Ray Data may take to place and load every engine actor


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


def _skip_done(input: Path, done: int, output: Path) -> Iterator:
    """The input's lines after the first `done`, streamed; an input shorter than the output is refused."""
    from lifecycle.readers import read_lines

    lines = read_lines(Path(input))
    have = sum(1 for _ in itertools.islice(lines, done))
    if have < done:
        raise UserError(f"{output} has {done} lines but {input} only {have}: wrong pair? use --restart")
    return lines


def run_batch(model: str, input: Path, output: Path, max_tokens: int = 64, temperature: float = 0.0,
              batch_size: int = 16, threads: int = 1, use_ray: bool = False, restart: bool = False,
              ray_address: str = "", actors: int = 1, num_cpus: float = 0.5) -> dict:
    """Answer every line of `input` into `output`, resuming after the output's last complete line.

    The input is streamed (never held whole): locally here, on Ray by a read task on this node that feeds
    `actors` engine actors, which Ray Data spreads over the cluster's nodes."""
    if not Path(input).is_file():
        raise UserError(f"--input {input}: file not found")
    if batch_size < 1 or actors < 1:
        raise UserError("--batch-size and --actors must be >= 1")
    output = Path(output)
    if restart and output.exists():
        output.unlink()
    done = _done_lines(output)
    from serve.host import parse_model_spec

    spec = parse_model_spec(model)
    extra: dict = {}
    if use_ray:
        _skip_done(input, done, output)  # reads only the prefix already answered
        records_iter = _ray_records(spec, Path(input).resolve(), done, max_tokens, temperature, batch_size,
                                    threads, ray_address, actors, num_cpus, extra)
    else:
        records_iter = _local_records(spec, _skip_done(input, done, output), done, max_tokens, temperature,
                                      batch_size, threads)
    failed = processed = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a") as f:
        for chunk in records_iter:
            for rec in chunk:
                failed += "error" in rec
                f.write(json.dumps(rec) + "\n")
            processed += len(chunk)
            f.flush()
            os.fsync(f.fileno())
    summary = {"lines": done + processed, "resumed_after": done, "processed": processed, "failed": failed, **extra}
    print(json.dumps(summary))
    return summary


def _local_records(spec, lines, done, max_tokens, temperature, batch_size, threads):
    from serve.host import EngineHost, load_model

    host = EngineHost(load_model(spec, threads), spec["name"], max_batch_size=batch_size)
    try:
        start = done
        while chunk := list(itertools.islice(lines, batch_size)):
            yield process_chunk(host, start, [ln.text for ln in chunk], max_tokens, temperature,
                                [ln.error or "" for ln in chunk])
            start += len(chunk)
    finally:
        host.close()


class _RayChunk:
    """Ray Data stateful UDF: one engine per actor, a batch of raw lines in, records (as JSON) out."""

    def __init__(self, spec: dict, threads: int, max_tokens: int, temperature: float):
        import ray

        from serve.host import EngineHost, load_model

        self.host = EngineHost(load_model(spec, threads), spec["name"])
        self.max_tokens, self.temperature = max_tokens, temperature
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        lines, index = [str(x) for x in batch["raw"]], [int(i) for i in batch["line"]]
        errors = [str(x) for x in batch["error"]]
        recs = process_chunk(self.host, 0, lines, self.max_tokens, self.temperature, errors)
        for rec, i in zip(recs, index):
            rec["line"] = i
        return {"line": index, "record": [json.dumps(r) for r in recs], "node": [self.node] * len(recs)}


def _line_source(path: Path, done: int, block: int):
    """A Ray Data datasource of the input's lines after `done`: one read task, on the driver's node (where
    the file is), that streams the file through `read_lines` and yields a block every `block` lines."""
    import pyarrow as pa
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    def read():
        from lifecycle.readers import read_lines

        rows: list = []
        for ln in itertools.islice(read_lines(path), done, None):
            rows.append(ln)
            if len(rows) == block:
                yield _table(rows)
                rows = []
        if rows:
            yield _table(rows)

    def _table(rows):
        return pa.table({"line": [ln.lineno - 1 for ln in rows], "raw": [ln.text or "" for ln in rows],
                         "error": [ln.error or "" for ln in rows]})

    class Lines(Datasource):
        supports_distributed_reads = False  # the file is on this node

        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=[str(path)], exec_stats=None)
            return [ReadTask(read, meta)]

    return Lines()


def _ray_records(spec, path, done, max_tokens, temperature, batch_size, threads, address, actors, num_cpus, extra):
    """Ray Data path: lines streamed from one read task to `actors` engine actors, order preserved."""
    import ray

    from serve.ray_backend import connect

    started = connect(address)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        # start the pool whole before the first batch, so work spreads over every actor's node (and an
        # actor that cannot be placed is an error, not a hang)
        ctx.wait_for_min_actors_s = ACTOR_START_S
        ds = ray.data.read_datasource(_line_source(path, done, batch_size), num_cpus=0.1)  # it only reads
        out = ds.map_batches(_RayChunk, fn_constructor_args=(spec, threads, max_tokens, temperature),
                             batch_size=batch_size, concurrency=actors, num_cpus=num_cpus)
        nodes: set = set()
        try:
            for b in out.iter_batches(batch_size=None, batch_format="numpy"):
                nodes.update(str(n) for n in b["node"])
                yield [json.loads(r) for r in b["record"]]
        except ray.exceptions.GetTimeoutError:
            raise UserError(f"the cluster could not start {actors} engine actors of {num_cpus} CPUs within "
                            f"{ACTOR_START_S} s; lower --actors or --num-cpus, or add nodes") from None
        extra["nodes"] = len(nodes)
    finally:
        if started:
            ray.shutdown()
