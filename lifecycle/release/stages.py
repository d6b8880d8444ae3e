"""The stages of a release, declared in one table and run by one runner through the stage cache.

    STAGES["sft"]   # StageKind: output kind, the modules it runs, the libraries in its key, how to read metrics
    run = Runner(cfg, cache, work, log)
    art = run.stage("sft", "sft", config=fields, inputs={...}, build=lambda out: sft.run(cfg, out))

A stage's cache key hashes its config, its inputs' sha256, and its code: the source of every project module
its run function can import (`lifecycle.release.codegraph`), plus the versions of the libraries it names.
So editing a module sft imports makes sft, and everything keyed on sft's output, run again. `Runner` keeps
the record of every stage (key, cached or run, inputs' and outputs' sha256, wall time, metrics) and
hard-links each artifact into the release being assembled. Outputs are written atomically into the cache
first, so a killed run resumes from the last completed stage. A `live` stage (deploy) is recorded the same
way and never cached.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lifecycle.artifact import Artifact, sha256_file
from lifecycle.errors import UserError
from lifecycle.release.cache import StageCache, code_identity, digest, link_tree

TRAIN_LIBS = ("torch", "transformers", "trl", "peft", "accelerate")
# Config fields that do not change a stage's result (kept out of its key).
UNKEYED = {"model", "data", "output", "threads"}
TRAIN_METRICS = ("exact_match", "verbose_rate", "raw_exact_match", "reward_accuracy", "reward_margin",
                 "train_loss", "final_loss", "merge_parity", "max_abs_logits_diff")
PRETRAIN_METRICS = ("heldout_perplexity_before", "heldout_perplexity_after", "train_loss", "train_tokens")
PARITY_KEYS = ("top1_agreement", "mean_kl", "greedy_agreement", "exact_match", "parent_exact_match",
               "ratio_to_parent", "produce_s", "load_s", "runtime", "nll_delta")


def _train_metrics(art: Artifact) -> dict:
    return {k: art.metrics[k] for k in TRAIN_METRICS if isinstance(art.metrics.get(k), (int, float))}


def _pretrain_metrics(art: Artifact) -> dict:
    return {k: art.metrics[k] for k in PRETRAIN_METRICS if isinstance(art.metrics.get(k), (int, float))}


def _parity_metrics(art: Artifact) -> dict:
    return {k: art.metrics[k] for k in PARITY_KEYS if isinstance(art.metrics.get(k), (int, float))}


def _count_metrics(art: Artifact) -> dict:
    return {k: v for k, v in art.metrics.items() if isinstance(v, int)}


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


def _deploy_metrics(found: dict) -> dict:
    return {f"loadtest/{k}": v for k, v in found["loadtest"].items() if isinstance(v, (int, float))}


@dataclass(frozen=True)
class StageKind:
    """What a kind of stage produces, the project modules it runs, and the libraries its results depend on."""

    output: str  # "artifact" (a cached artifact folder), "json" (a cached result file) or "live" (never cached)
    modules: tuple[str, ...]
    libs: tuple[str, ...]
    metrics: Callable[[Any], dict]


STAGES: dict[str, StageKind] = {
    "data": StageKind("artifact", ("lifecycle.data.prepare", "lifecycle.data.load"), ("datasketch",), _count_metrics),
    "pretrain": StageKind("artifact", ("lifecycle.train.pretrain",), TRAIN_LIBS + ("datasets", "sentencepiece"),
                          _pretrain_metrics),
    "sft": StageKind("artifact", ("lifecycle.train.sft",), TRAIN_LIBS, _train_metrics),
    "align": StageKind("artifact", ("lifecycle.align.methods",), TRAIN_LIBS, _train_metrics),
    "merge": StageKind("artifact", ("lifecycle.train.merge",), ("torch", "transformers", "peft"), _train_metrics),
    "quantize": StageKind("artifact", ("quantize.driver",), ("torch", "transformers"), _parity_metrics),
    "eval": StageKind("json", ("lifecycle.eval.runner", "lifecycle.eval.tasks"), ("torch", "transformers"),
                      lambda d: d["metrics"]),
    "bench": StageKind("json", ("perf.bench.runner",), ("torch", "transformers"), bench_metrics),
    "deploy": StageKind("live", ("lifecycle.release.deploy",), ("ray", "locust"), _deploy_metrics),
}
# The engine registry names every format's engine; a stage follows only the engine it actually loads.
SKIP_REGISTRIES = ("lifecycle.engine",)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def engine_code(fmt: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(modules, libraries) of the engine that runs artifacts of this format."""
    from lifecycle.engine import registered_engines

    module = registered_engines()[fmt].split(":")[0]
    if fmt in ("hf", "adapter"):
        return (module,), ()
    from quantize import format_spec

    spec = format_spec(fmt)
    return (module, spec.module), spec.dists


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS. glibc keeps freed arenas mapped, so without this
    one ship process grows by every model a stage loaded and freed, and the next stage starts from there."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


class PeakRSS:
    """Samples the resident memory of this process and its children while a stage runs (psutil, 5 Hz)."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak = 0
        self._stop = None

    def _sample(self) -> int:
        me = self._psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except self._psutil.Error:
                pass
        return total

    def __enter__(self) -> "PeakRSS":
        import importlib.util
        import threading

        if importlib.util.find_spec("psutil") is None:
            return self
        import psutil

        self._psutil = psutil
        self._stop = threading.Event()
        self.peak = self._sample()

        def loop() -> None:
            while not self._stop.wait(self.interval):
                try:
                    self.peak = max(self.peak, self._sample())
                except psutil.Error:
                    pass

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join(timeout=2)
            self.peak = max(self.peak, self._sample())
            self._stop = None  # idempotent: the record reads the peak before the with-block ends

    @property
    def mb(self) -> float | None:
        return round(self.peak / 2**20, 1) if self.peak else None


class Runner:
    """Runs stages through the cache and records them for release.json (with wall time and peak RSS)."""

    def __init__(self, cfg, cache: StageCache, work: Path, log: Callable[[str], None]):
        self.cfg = cfg
        self.cache = cache
        self.work = work  # the release directory being assembled (renamed into place at the end)
        self.log = log
        self.records: list[dict] = []
        self._quant_parent: dict = {}

    def key(self, kind: str, config: dict, inputs: dict, modules: tuple[str, ...] = (),
            libs: tuple[str, ...] = ()) -> str:
        spec = STAGES[kind]
        code = code_identity(spec.modules + modules, spec.libs + libs, SKIP_REGISTRIES)
        return self.cache.key(kind, config=config, inputs=inputs, code=code)

    def stage(self, kind: str, name: str, *, config: dict, inputs: dict, build: Callable, target: str | None = None,
              modules: tuple[str, ...] = (), libs: tuple[str, ...] = (), record_as: str | None = None):
        """Run (or reuse) one stage: an Artifact for `artifact` stages, a dict for `json` and `live` ones."""
        try:
            with PeakRSS() as rss:
                return self._stage(kind, name, config, inputs, build, target, modules, libs, record_as, rss)
        finally:
            release_memory()

    def _stage(self, kind, name, config, inputs, build, target, modules, libs, record_as, rss):
        spec = STAGES[kind]
        stage = record_as or kind
        t0 = time.perf_counter()
        label = f"{stage}{f' {target}' if target else ''}"
        if spec.output == "live":
            self.log(f"{label}: running (live check, never cached)")
            found = build()
            self._record(stage, target, None, False, t0, inputs, {}, spec.metrics(found), rss)
            return found
        key = self.key(kind, config, inputs, modules, libs)
        if spec.output == "artifact":
            out = self.cache.artifact(key, name)
        else:
            out = self.cache.load_json(key, name)
        cached = out is not None
        self.log(f"{label}: {'cached' if cached else 'running'} (key {key[:12]})")
        if spec.output == "artifact":
            if not cached:
                build(self.cache.artifact_path(key, name))
                out = Artifact.load(self.cache.artifact_path(key, name))
            link_tree(out.path, self.work / "artifacts" / name)
            outputs = {f"artifacts/{name}/manifest.json": out.manifest_sha256}
        else:
            from lifecycle.atomic import write_json_atomic

            if not cached:
                out = build()
                self.cache.store_json(key, name, out)
            dest = self.work / "results" / f"{name}.json"
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(dest, out)
            outputs = {f"results/{name}.json": sha256_file(dest)}
        self._record(stage, target, key, cached, t0, inputs, outputs, spec.metrics(out), rss)
        return out

    def _record(self, stage, target, key, cached, t0, inputs, outputs, metrics, rss) -> None:
        wall = round(time.perf_counter() - t0, 2)
        rss.__exit__()  # the peak so far (sampling stops; the with-block's exit is then a no-op)
        self.records.append({"stage": stage, "target": target, "key": key, "cached": cached, "wall_s": wall,
                             "rss_peak_mb": rss.mb, "inputs": inputs, "outputs": outputs, "metrics": metrics})
        shown = "  ".join(f"{k}={_fmt(v)}" for k, v in list(metrics.items())[:5] if not k.endswith("/n"))
        self.log(f"  {'reused' if cached else 'done'} in {wall:.1f} s  {shown}")

    # -- the stages of a release ---------------------------------------------------------------------------

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

        def build(out: Path) -> None:
            import tempfile

            from lifecycle.data.load import load_records, write_jsonl

            with tempfile.TemporaryDirectory() as tmp:
                src = spec
                if spec.startswith("builtin:"):
                    src = str(Path(tmp) / f"{spec.split(':', 1)[1]}.jsonl")
                    write_jsonl(Path(src), load_records(spec, fields, n=n, seed=self.cfg.seed))
                prepare(from_dict(PrepareConfig, {"seed": self.cfg.seed, **options, "inputs": [src]}), out)

        art = self.stage("data", f"data-{role}", config=options, inputs=source, build=build,
                         record_as=f"data-{role}")
        return str(art.path), {f"data-{role}": art.manifest_sha256}

    def train(self, kind: str, name: str, cls, run: Callable, fields: dict, inputs: dict) -> Artifact:
        """SFT, align or merge: `cls(**fields)` run by `run(cfg, out)`; the key skips paths and threads."""
        from lifecycle.config import from_dict

        stage_cfg = from_dict(cls, fields)
        keyed = {k: v for k, v in dataclasses.asdict(stage_cfg).items() if k not in UNKEYED}
        keyed["class"] = f"{cls.__module__}.{cls.__name__}"
        return self.stage(kind, name, config=keyed, inputs=inputs, modules=(cls.__module__,),
                          build=lambda out: run(stage_cfg, out))

    def pretrain(self, base: Artifact, options: dict) -> Artifact:
        """Continued pretraining of the base on `options["data"]` before SFT; keyed on the corpus's content."""
        from lifecycle.train import corpus, pretrain

        spec = str(options["data"])
        fields = {"threads": self.cfg.threads, "seed": self.cfg.seed, **options, "model": str(base.path),
                  "data": spec, "output": ""}
        inputs = {"base": base.manifest_sha256, "corpus": corpus.corpus_sha256(spec)}
        return self.train("pretrain", "pretrain", pretrain.PretrainConfig, pretrain.run, fields, inputs)

    def quantize(self, merged: Artifact, fmt: str, options: dict) -> Artifact:
        from quantize.driver import quantize

        modules, libs = engine_code(fmt)
        inputs = {"parent": merged.manifest_sha256}
        return self.stage("quantize", fmt, target=fmt, config={"format": fmt, "options": options}, inputs=inputs,
                          modules=modules, libs=libs,
                          build=lambda out: quantize(merged.path, fmt, out, options=options,
                                                     parent_cache=self._quant_parent))

    def close(self) -> None:
        engine = self._quant_parent.get("engine")
        if engine is not None:
            engine.close()
        self._quant_parent.clear()

    def eval(self, name: str, art: Artifact) -> dict:
        eval_cfg = {k: self.cfg.eval[k] for k in ("tasks", "limit")}
        modules, libs = engine_code(art.format)
        return self.stage("eval", f"eval-{name}", target=name, config=eval_cfg,
                          inputs={"artifact": art.manifest_sha256}, modules=modules, libs=libs,
                          build=lambda: _evaluate(art, eval_cfg, self.cfg.threads))

    def bench(self, name: str, art: Artifact) -> dict:
        bench_cfg = {k: v for k, v in self.cfg.bench.items() if k != "enabled"}
        modules, libs = engine_code(art.format)
        return self.stage("bench", f"bench-{name}", target=name, config=bench_cfg,
                          inputs={"artifact": art.manifest_sha256}, modules=modules, libs=libs,
                          build=lambda: _bench(art, bench_cfg, self.log))

    def deploy(self, name: str, art: Artifact) -> dict:
        from lifecycle.models import task_profile
        from lifecycle.release import deploy

        profile = task_profile(art)  # the smoke test asks the built-in demo a sum, any other model a chat
        return self.stage("deploy", "deploy", target=name, config={}, inputs={"artifact": art.manifest_sha256},
                          build=lambda: deploy.run(name, art.path, self.cfg.deploy, self.work / "deploy", self.log,
                                                   profile=profile))


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
    from perf.bench.runner import BenchConfig, run

    cfg = BenchConfig(**{**bench_cfg, "models": [str(art.path)], "bandwidth": False, "output": ""})
    return run(cfg, progress=lambda m: log("  " + m))["targets"][0]
