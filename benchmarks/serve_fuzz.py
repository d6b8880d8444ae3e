"""Schemathesis against `lifecycle serve`'s own OpenAPI document: local and Ray backends, HF and GGUF engines.

    python benchmarks/serve_fuzz.py                      # >= 2,000 generated requests per server
    python benchmarks/serve_fuzz.py --max-examples 40 --only local-hf

Each server is started with the real CLI on 127.0.0.1 (max_tokens_limit 32 keeps generation short; the
limit is written into the document, so the fuzzer knows it). Schemathesis runs every phase (examples,
coverage, fuzzing, stateful) and every check except `positive_data_acceptance`: a request the schema allows
that the engine refuses with a documented 4xx (json_schema on an engine without grammars, a prompt longer
than the context) is correct behaviour, not a failure. The table counts generated requests, server errors
(5xx), response schema violations and any other failed check.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
FAILURE = re.compile(r"❌ (ST\d+) (.+?): (\d+)")
GENERATED = re.compile(r"(\d+) generated")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gguf_artifact(work: Path) -> str:
    out = work / "gguf-q8_0"
    if not out.exists():
        subprocess.run(["lifecycle", "quantize", "-m", "tiny-arith", "-f", "gguf-q8_0", "-o", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
    return str(out)


def serve(model: str, engine: str, port: int, log: Path) -> subprocess.Popen:
    cmd = ["lifecycle", "serve", "--model", f"m={model}", "--engine", engine, "--port", str(port),
           "--set", "max_tokens_limit=32", "--set", "default_max_tokens=16", "--set", "request_timeout_s=30"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise SystemExit(f"server did not become healthy; see {log}")


def fuzz(port: int, max_examples: int, seed: int) -> tuple[int, dict[str, int], float, str]:
    start = time.monotonic()
    cmd = ["schemathesis", "run", f"http://127.0.0.1:{port}/openapi.json", "--checks", "all",
           "--exclude-checks", "positive_data_acceptance", "--max-examples", str(max_examples),
           "--seed", str(seed), "--no-color", "--request-timeout", "60"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"})
    text = out.stdout + out.stderr
    generated = sum(int(m) for m in GENERATED.findall(text))
    fails = {f"{code} {name}": int(n) for code, name, n in FAILURE.findall(text)}
    return generated, fails, time.monotonic() - start, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-examples", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default="", help="comma list of local-hf, local-gguf, ray-hf, ray-gguf")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve-fuzz-"))
    targets = {"local-hf": ("local", "tiny-arith"), "local-gguf": ("local", None),
               "ray-hf": ("ray", "tiny-arith"), "ray-gguf": ("ray", None)}
    chosen = [t for t in targets if not args.only or t in args.only.split(",")]
    rows = []
    for name in chosen:
        engine, model = targets[name]
        model = model or gguf_artifact(work)
        port = free_port()
        proc = serve(model, engine, port, work / f"{name}.log")
        try:
            generated, fails, secs, text = fuzz(port, args.max_examples, args.seed)
        finally:
            proc.terminate()
            proc.wait(60)
        (work / f"{name}.schemathesis.txt").write_text(text)
        server_errors = sum(n for k, n in fails.items() if "Server error" in k)
        schema = sum(n for k, n in fails.items() if "violates schema" in k)
        other = {k: n for k, n in fails.items() if "Server error" not in k and "violates schema" not in k}
        rows.append((name, generated, server_errors, schema, other, secs))
        print(f"{name}: {generated} requests, {server_errors} 5xx, {schema} schema violations, other {other}, "
              f"{secs:.0f} s", flush=True)
    print("\n| server | requests | 5xx | schema violations | other failed checks | wall s |\n|---|---|---|---|---|---|")
    for name, generated, s5, sv, other, secs in rows:
        print(f"| {name} | {generated} | {s5} | {sv} | {', '.join(f'{k}: {n}' for k, n in other.items()) or 0} "
              f"| {secs:.0f} |")
    print(f"\nlogs and schemathesis output: {work}")


if __name__ == "__main__":
    sys.exit(main())
