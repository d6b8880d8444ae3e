"""Ray Serve backend: a `ModelServer` deployment per model behind one `Router` ingress running the app.

    lifecycle serve --model tiny-arith --port 8000                  # starts a Ray cluster on this box
    lifecycle serve --model tiny-arith --write-config serve.yaml    # or: serve run serve.yaml

`build_openai_app(args)` is the importable app builder (`import_path: serve.ray_backend:build_openai_app`),
the same one `lifecycle serve` deploys, so the CLI and a Serve YAML run identical code. Each model
deployment has replicas (fixed or autoscaled), fractional CPUs, and `@serve.batch` dynamic batching when
its engine can batch. Streams reach the router already coalesced (see `EngineHost.stream`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import threading
import time
from typing import AsyncIterator

from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from lifecycle.config import from_dict
from lifecycle.engine import Completion, Prompt, SamplingParams
from lifecycle.errors import UserError
from serve.config import APP_NAME, ServeConfig, is_loopback
from serve.host import EngineHost, load_model
from serve.protocol import APIError

HEALTH_REFRESH_S = 1.0  # how stale a cached /health answer may get
RETRIES = 2  # times a request whose replica died before answering is sent again (to another replica)
HEAD_RESOURCE = "node:__internal_head__"  # the resource Ray gives the head node alone
_REPLICA_DIED = ("RayActorError", "ActorDiedError", "ActorUnavailableError")


def _replica_died(e: BaseException) -> bool:
    return any(c.__name__ in _REPLICA_DIED for c in type(e).__mro__)


@serve.deployment(max_ongoing_requests=64, health_check_period_s=5, health_check_timeout_s=30)
class ModelServer:
    """One replica of one model."""

    def __init__(self, spec: dict, threads: int = 1, max_batch_size: int = 16,
                 batch_wait_timeout_s: float = 0.0, stream_interval_s: float = 0.02):
        self.host = EngineHost(load_model(spec, threads), spec["name"], max_batch_size, stream_interval_s)
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.in_flight = 0
        if self.host.can_batch:
            self._batched.set_max_batch_size(max_batch_size)
            self.host.submit = self._submit

    async def _submit(self, prompt: Prompt, params: SamplingParams):
        """Enqueue into @serve.batch with a wait chosen by load.

        Serve forms a batch from what arrives within the wait after its first request. A fixed wait
        either delays every lone request or (at 0) yields batches of one even under load. So: a lone
        request goes at once; while others are in flight, wait about one engine call for company.
        """
        busy = self.in_flight > 0
        self._batched.set_batch_wait_timeout_s(
            max(self.batch_wait_timeout_s, min(self.host.batch_seconds, 0.05)) if busy else self.batch_wait_timeout_s)
        self.in_flight += 1
        try:
            return await self._batched(prompt, params)
        finally:
            self.in_flight -= 1

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _batched(self, prompts: list[Prompt], params: list[SamplingParams]) -> list:
        return await self.host.run_batch(prompts, params)

    async def complete(self, prompts: list[Prompt], params: SamplingParams, n: int) -> tuple[list[Completion], int]:
        return await self.host.complete(prompts, params, n)

    async def stream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[dict]:
        async for event in self.host.stream(prompt, params):
            yield event

    def info(self) -> dict:
        import ray

        return {**self.host.info(), "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}

    def __del__(self) -> None:
        """Serve calls this on graceful shutdown, after in-flight requests drained: close the engine once
        no thread is inside it (a GGUF model freed under a running llama.cpp call crashes the replica)."""
        if hasattr(self, "host"):
            self.host.close()


def _queue_full(model: str, e: BackPressureError) -> APIError:
    wait = max(1, int(round(e.retry_after_s or 1)))
    return APIError(429, f"the model '{model}' has too many queued requests; retry after {wait}s",
                    type="rate_limit_error", code="queue_full", headers={"Retry-After": str(wait)})


class RayBackend:
    """The app's backend inside the router: calls model deployments through their handles."""

    def __init__(self, handles: dict[str, DeploymentHandle]):
        self.handles = handles
        self.names = list(handles)
        self._health: dict[str, str] | None = None
        self._health_at = 0.0
        self._refresh: asyncio.Future | None = None

    async def complete(self, model: str, prompts: list[Prompt], params: SamplingParams,
                       n: int) -> tuple[list[Completion], int]:
        for attempt in range(RETRIES + 1):
            try:
                return await self.handles[model].complete.remote(prompts, params, n)
            except BackPressureError as e:  # Serve's handle queue (max_queued_requests) is full
                raise _queue_full(model, e) from None
            except Exception as e:  # a killed replica: generation has no side effects, so run it again
                if not _replica_died(e) or attempt == RETRIES:
                    raise
        raise AssertionError("unreachable")

    async def stream(self, model: str, prompt: Prompt, params: SamplingParams) -> AsyncIterator[dict]:
        for attempt in range(RETRIES + 1):  # until the first event, a dead replica's stream is retried
            gen = self.handles[model].options(stream=True).stream.remote(prompt, params)
            try:
                first = await gen.__anext__()
                break
            except StopAsyncIteration:
                return
            except BackPressureError as e:
                raise _queue_full(model, e) from None
            except Exception as e:
                if not _replica_died(e) or attempt == RETRIES:
                    raise
            except BaseException:  # cancelled before the first event: stop the replica's work too
                gen.cancel()
                raise
        finished = False
        try:
            yield first
            async for event in gen:
                yield event
            finished = True
        finally:
            if not finished:  # the client went away or timed out: stop generating in the replica
                gen.cancel()

    async def health(self) -> dict[str, str]:
        """Each model's state as Serve's controller sees it: ready while a replica of it is RUNNING.

        The answer never waits on a replica (they may all be busy generating): it is a cached view of
        `serve.status()`, refreshed in the background at most every HEALTH_REFRESH_S.
        """
        stale = time.monotonic() - self._health_at > HEALTH_REFRESH_S
        if stale and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.ensure_future(self._refresh_health())
        if self._health is None:  # the first call waits for one answer
            try:
                await asyncio.wait_for(asyncio.shield(self._refresh), 10)
            except Exception:
                return {name: "unavailable" for name in self.names}
        return dict(self._health)

    async def _refresh_health(self) -> None:
        try:
            status = await asyncio.get_running_loop().run_in_executor(None, serve.status)
            states = {}
            for name, handle in self.handles.items():
                app = status.applications.get(handle.app_name)
                dep = app.deployments.get(handle.deployment_name) if app else None
                running = dep.replica_states.get("RUNNING", 0) if dep else 0
                states[name] = "ready" if running else "unavailable"
        except Exception as e:  # Serve's controller unreachable: report the models down, and say why in the log
            logging.getLogger("serve.ray").warning("health check could not read serve.status(): %s", e)
            states = {name: "unavailable" for name in self.names}
        self._health, self._health_at = states, time.monotonic()

    async def stats(self) -> dict[str, dict]:
        """Engine counters of one replica per model (the one the handle picks)."""
        infos = await asyncio.gather(*(h.info.remote() for h in self.handles.values()), return_exceptions=True)
        return {n: i for n, i in zip(self.names, infos) if isinstance(i, dict)}


@serve.deployment(max_ongoing_requests=512)
@serve.ingress()
class Router:
    """The HTTP ingress: the OpenAI app from serve.app over the model handles."""

    def __init__(self, models: dict[str, DeploymentHandle], settings: dict):
        self.backend = RayBackend(models)
        self.settings = settings

    def __serve_build_asgi_app__(self):
        from serve.app import build_app

        return build_app(self.backend, self.settings)


def _deployment_name(model: str) -> str:
    return "model-" + re.sub(r"[^A-Za-z0-9_-]", "-", model)


def build_openai_app(args: dict):
    """Serve application builder: {"models": [{"name", "path"}], "options": {ServeConfig fields}}
    (and "router_on_head": true to keep the router on the head node, beside a HeadOnly proxy)."""
    specs = args.get("models") or []
    if not specs:
        raise UserError("no models to serve: give at least one --model (args.models in a Serve YAML)")
    cfg = from_dict(ServeConfig, {k: v for k, v in (args.get("options") or {}).items() if k != "models"})
    scale: dict = {"num_replicas": cfg.min_replicas}
    if cfg.max_replicas > cfg.min_replicas:
        scale = {"autoscaling_config": {"min_replicas": cfg.min_replicas, "max_replicas": cfg.max_replicas,
                                        "target_ongoing_requests": cfg.target_ongoing_requests}}
    placement: dict = {"max_replicas_per_node": cfg.max_replicas_per_node} if cfg.max_replicas_per_node else {}
    actor = {"num_cpus": cfg.num_cpus, **({"num_gpus": cfg.num_gpus} if cfg.num_gpus else {})}
    handles = {}
    for spec in specs:
        if spec["name"] in handles:
            raise UserError(f"two models are named '{spec['name']}'; name them with --model NAME=DIR")
        handles[spec["name"]] = ModelServer.options(
            name=_deployment_name(spec["name"]), ray_actor_options=actor, **placement,
            max_ongoing_requests=cfg.max_ongoing_requests, max_queued_requests=max(1, cfg.max_queued_requests),  # 0 refuses all in Serve
            graceful_shutdown_timeout_s=cfg.drain_timeout_s + 30, graceful_shutdown_wait_loop_s=1.0, **scale,
        ).bind(spec, cfg.threads, cfg.max_batch_size, cfg.batch_wait_timeout_s, cfg.stream_interval_ms / 1000)
    router_actor: dict = {"num_cpus": cfg.router_num_cpus}
    if args.get("router_on_head"):
        # next to the head's HTTP proxy (`lifecycle serve` runs it HeadOnly): a worker node that dies then
        # takes no ingress with it. On a worker, the router's in-flight requests failed as plain 500s.
        router_actor["resources"] = {HEAD_RESOURCE: 0.001}
    router = Router.options(ray_actor_options=router_actor)
    return router.bind(handles, cfg.app_settings())


def _wait_running(name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.status().applications.get(name)
        if app is not None and app.status == "RUNNING":
            return
        if app is not None and app.status == "DEPLOY_FAILED":
            raise UserError(f"Ray Serve could not deploy the models: {app.message.strip().splitlines()[-1]}")
        time.sleep(0.5)
    raise UserError(f"replicas were not running after {timeout_s:.0f}s; the cluster may lack CPUs for "
                    "num_cpus x replicas (lower --set num_cpus=... or add nodes), or the head node lacks "
                    "router_num_cpus for the router")


def _answers(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _loopback_cluster(address: str) -> bool:
    """True for a cluster whose nodes registered as 127.0.0.1 (e.g. `ray.cluster_utils.Cluster` with
    node_ip_address="127.0.0.1"): its GCS answers on loopback but not on this box's network address."""
    if address.startswith("ray://") or address in ("auto", "local"):
        return False
    host, _, port = address.rpartition(":")
    if not port.isdigit() or not is_loopback(host.strip("[]") or "x"):
        return False
    from ray._private.services import get_node_ip_address

    return _answers("127.0.0.1", int(port)) and not _answers(get_node_ip_address(), int(port))


def connect(address: str = "", object_store_mb: int = 100, num_cpus: int = 0, temp_dir: str = "") -> bool:
    """Join the Ray cluster at `address`, or start a private one on this box when it is empty.

    Returns True when this call started Ray (the caller shuts it down). Joining takes the cluster's own
    object store size and CPUs: those options only shape a cluster started here.

    On Linux `ray.init` rewrites a loopback address, and the driver's own node address, to the box's
    network address (ray-project/ray#59110). A cluster bound to 127.0.0.1 listens on nothing else, so the
    driver then waits for a GCS that never answers, or for a local node of an address no node has. For
    such a cluster the driver keeps 127.0.0.1 for both, through the switch Ray uses for single-box
    clusters on macOS and Windows (`ENABLE_RAY_CLUSTER` off while `ray.init` runs).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    if address:
        from ray._private import ray_constants

        loopback = _loopback_cluster(address)
        saved = ray_constants.ENABLE_RAY_CLUSTER
        try:
            if loopback:
                ray_constants.ENABLE_RAY_CLUSTER = False
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as e:
            raise UserError(f"could not join the Ray cluster at {address}: {str(e).splitlines()[0]}") from None
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = saved
    else:  # a private single-box cluster: token auth adds nothing when every process is ours
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(include_dashboard=False, object_store_memory=object_store_mb << 20, num_cpus=num_cpus or None,
                 _temp_dir=temp_dir or None, log_to_driver=False)
    return True


def run_ray(cfg: ServeConfig, specs: list[dict], ready: threading.Event | None = None,
            stop: threading.Event | None = None) -> None:
    """Start (or join) a Ray cluster, deploy, serve until SIGINT/SIGTERM or `stop`, then shut down."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Serve's throughput mode: user code and handle routing on the replica's own event loop, gRPC between
    # replicas. It cut per-request overhead by about a third here; Ray processes started below inherit it.
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    # on shutdown the ingress replica of a cluster started here stays reachable this long so that load
    # balancers can deregister it (Serve's default: 30 s); nothing is in front of it. In-flight requests
    # still drain after it.
    if not cfg.ray_address:
        os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")
    started_here = connect(cfg.ray_address, object_store_mb=cfg.object_store_mb, num_cpus=cfg.ray_num_cpus,
                           temp_dir=cfg.ray_temp_dir)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": cfg.host, "port": cfg.port,
                                  "request_timeout_s": cfg.request_timeout_s + 5}, proxy_location="HeadOnly")
        serve._run(build_openai_app({"models": specs, "options": cfg.__dict__, "router_on_head": True}), _blocking=False,
                   name=APP_NAME, route_prefix="/")
        _wait_running(APP_NAME, cfg.startup_timeout_s)
        print(f"serving {', '.join(s['name'] for s in specs)} on http://{cfg.host}:{cfg.port}/v1 (Ray Serve)",
              flush=True)
        if ready is not None:
            ready.set()
        while not stop.wait(0.5):
            pass
    finally:
        serve.shutdown()
        if started_here:
            import ray

            ray.shutdown()
