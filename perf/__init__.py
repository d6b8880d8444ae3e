"""Performance tests of a served model, from the outside: everything here talks HTTP to `lifecycle serve`
(or any OpenAI-compatible server on this machine) and imports nothing of the serving layer but its backend
names.

    lifecycle bench --model tiny-arith --concurrency 1,4,16          # latency, throughput, memory per artifact
    lifecycle loadtest --endpoint http://127.0.0.1:8000 --users 8    # Locust load with SLO checks

Modules: cli (both commands), endpoint (local-only URL check, JSON GET), prompts (seeded prompt sets),
bench/ (streaming client, metrics, memory, limits, runner, report), loadtest/ (Locust users and runner).
"""
