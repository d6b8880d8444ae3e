"""Prometheus metrics for one app: requests, latency, tokens, errors. Served as text at GET /metrics.

Each app has its own registry, so several apps in one process (tests, Ray replicas) never collide.
Under Ray Serve each ingress replica reports its own counts; scrape every replica or keep one ingress.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the app)

ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics", "/ping", "/invocations",
          "/openapi.json"}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("lifecycle_requests_total", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("lifecycle_request_latency_seconds", "Request latency (to the last byte)",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("lifecycle_errors_total", "Responses with status >= 400, by status",
                              ["status"], registry=self.registry)
        self.prompt_tokens = Counter("lifecycle_prompt_tokens_total", "Prompt tokens processed",
                                     ["model"], registry=self.registry)
        self.generated_tokens = Counter("lifecycle_generated_tokens_total", "Completion tokens generated",
                                        ["model"], registry=self.registry)

    def observe(self, path: str, status: int, seconds: float) -> None:
        route = path if path in ROUTES else "other"
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(str(status)).inc()

    def tokens(self, model: str, prompt: int, completion: int) -> None:
        self.prompt_tokens.labels(model).inc(prompt)
        self.generated_tokens.labels(model).inc(completion)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    @staticmethod
    def engine_lines(stats: dict[str, dict]) -> bytes:
        """Engine counters reported by the backend (under Ray: one replica's), in exposition format."""
        lines = []
        for metric, key, help_, kind in (
                ("lifecycle_engine_requests_total", "requests", "Requests run by the engine", "counter"),
                ("lifecycle_engine_calls_total", "engine_calls", "Engine generate calls (batches)", "counter"),
                ("lifecycle_engine_rejected_total", "rejected", "Requests refused with 429 (queue full)", "counter"),
                ("lifecycle_engine_in_flight", "in_flight", "Requests admitted and not finished", "gauge"),
                ("lifecycle_engine_threads", "engine_threads", "Threads inside the engine now", "gauge")):
            lines += [f"# HELP {metric} {help_}", f"# TYPE {metric} {kind}"]
            lines += [f'{metric}{{model="{m}"}} {s.get(key, 0)}' for m, s in stats.items()]
        return ("\n".join(lines) + "\n").encode()
