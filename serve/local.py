"""The local backend: every model in this process, the app on one uvicorn server.

    lifecycle serve --engine local --model tiny-arith --port 8000
"""

from __future__ import annotations

import signal
import threading
import time
from typing import AsyncIterator

from lifecycle.engine import Completion, Prompt, SamplingParams
from lifecycle.errors import UserError
from serve.host import Batcher, EngineHost, load_model


class LocalBackend:
    """Engines loaded here; generate goes through a Batcher per model when the engine can batch."""

    def __init__(self, hosts: dict[str, EngineHost], max_batch_size: int = 16, batch_wait_timeout_s: float = 0.0):
        self.hosts = hosts
        self.names = list(hosts)
        for host in hosts.values():
            if host.can_batch:
                host.submit = Batcher(host.run_batch, max_batch_size, batch_wait_timeout_s)

    @classmethod
    def load(cls, specs: list[dict], threads: int = 1, max_batch_size: int = 16, batch_wait_timeout_s: float = 0.0,
             stream_interval_s: float = 0.02, max_queued: int | None = 64) -> "LocalBackend":
        hosts: dict[str, EngineHost] = {}
        for spec in specs:
            if spec["name"] in hosts:
                raise UserError(f"two models are named '{spec['name']}'; name them with --model NAME=DIR")
            hosts[spec["name"]] = EngineHost(load_model(spec, threads), spec["name"], max_batch_size,
                                             stream_interval_s, max_queued)
        return cls(hosts, max_batch_size, batch_wait_timeout_s)

    async def complete(self, model: str, prompts: list[Prompt], params: SamplingParams,
                       n: int) -> tuple[list[Completion], int]:
        return await self.hosts[model].complete(prompts, params, n)

    def stream(self, model: str, prompt: Prompt, params: SamplingParams) -> AsyncIterator[dict]:
        return self.hosts[model].stream(prompt, params)

    async def health(self) -> dict[str, str]:
        return {name: "ready" for name in self.names}

    async def stats(self) -> dict[str, dict]:
        return {name: host.info() for name, host in self.hosts.items()}

    def close(self, timeout_s: float = 30.0) -> None:
        for host in self.hosts.values():
            host.close(timeout_s)


def run_local(cfg, specs: list[dict]) -> None:
    """Serve until SIGINT/SIGTERM: uvicorn stops accepting, open requests get `drain_timeout_s` to finish
    (streams still open then are cut, which stops their generation), and the engines close only after
    every generation thread has left them."""
    import uvicorn

    from serve.app import build_app

    backend = LocalBackend.load(specs, cfg.threads, cfg.max_batch_size, cfg.batch_wait_timeout_s,
                                cfg.stream_interval_ms / 1000, cfg.max_queued_requests)
    app = build_app(backend, cfg.app_settings())
    print(f"serving {', '.join(backend.names)} on http://{cfg.host}:{cfg.port}/v1 (local)", flush=True)
    # uvicorn drains on SIGINT/SIGTERM, then re-raises the signal to the previous handler: make that a
    # no-op so the process exits 0 after a graceful stop
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    try:
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning",
                    timeout_graceful_shutdown=cfg.drain_timeout_s)
    finally:
        backend.close(cfg.drain_timeout_s + 30)


class ServerThread:
    """Run an ASGI app on uvicorn in a background thread (tests, benchmarks). Port 0 picks a free port.

        with ServerThread(build_app(backend)) as srv:
            requests.get(srv.url + "/health")
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="uvicorn")
        self.host = host
        self.port = port

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
