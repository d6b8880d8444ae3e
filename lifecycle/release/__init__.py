"""Releases: `lifecycle ship` (config -> cached stages -> gated release) and `lifecycle releases`.

A release directory holds:

    release.json          the record below; written last, so a directory without it is incomplete
    README.md             model card (Hugging Face style)
    report.html           one self-contained page: eval/bench matrix, gates, plots
    artifacts/<name>/     every artifact the release built (hard links into the stage cache)
    results/<file>.json   eval and bench results per artifact

release.json (schema "lifecycle.release/1"):

    schema, release (directory name), created_at, code_version, wall_s, config (the ShipConfig as a dict)
    verdict            "shipped" | "refused"
    artifact           relative path of the artifact `lifecycle serve --release` serves ("artifacts/merged")
    stages             list, in run order, one per stage run or reused:
        {stage: "data-sft" | "sft" | "align" | "merge" | "quantize" | "eval" | "bench" | "deploy",
         target: artifact name for quantize/eval/bench (else null), key: sha256 of inputs+config+code,
         cached: bool, wall_s: float, inputs: {name: sha256}, outputs: {relative path: sha256},
         metrics: {flat name: number}}
    artifacts          {name: {path, format, runtime, manifest_sha256, size_bytes, parent (name or null),
                               parity: {top1_agreement, mean_kl, greedy_agreement, ...} ({} for merged),
                               eval: {"task/metric": number}, bench: bench target dict or null}}
                       "merged" is first and is the baseline of every relative gate.
                       bench dict (perf.bench.runner.bench_artifact): load_s, size_bytes, rss_idle_mb,
                       rss_peak_mb, errors, levels: [{concurrency, request_throughput, output_throughput,
                       errors, ttft|tpot|itl|e2e: {mean_ms, p50_ms, p90_ms, p95_ms, p99_ms}}]
    training           {"sft": "artifacts/sft/train_log.json", "align": "artifacts/align/train_log.json"}
                       (train_log.json: {summary, history: [{step, loss, ...}], wall_s})
    gates              [{artifact, rule, metric, op, kind, value, baseline, threshold, passed, reason, by}]
                       (rows of lifecycle.eval.gates.evaluate plus artifact and by = value - threshold)
    failed             one line per failed gate, e.g. "gguf-q4_0: addition/exact_match >= 95% of baseline:
                       0.81 vs 0.8835 (by -0.0735)"
    deploy             null, or {engine, url, smoke: {...}, loadtest: {...summary...}}
"""
