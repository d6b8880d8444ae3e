"""`lifecycle bench`: latency, throughput and memory per artifact, side by side.

    lifecycle bench --model tiny-arith --model runs/merged --concurrency 1,4,16 --output bench/results.json
    lifecycle bench --endpoint http://127.0.0.1:8000 --concurrency 1,4

Modules: client (the streaming load client, run as its own process),
metrics (vLLM's definitions), memory (RSS of a process tree), limits (memory bandwidth, weight bytes),
runner (start, measure, stop), report (table and plots); the prompt set is perf.prompts.
"""
