"""The serving backends `lifecycle serve --engine` offers: one registry entry per backend carries its runner,
its own options dataclass and what it is for. The CLI help and dispatch, the config checks of serve, bench
and ship all read this table, so a new backend is one module plus one line here.

    backend("ray").run(cfg, specs)          # imports serve.ray_backend only now

A backend's options are fields of `ServeConfig` too (it inherits every backend's options dataclass), so a
flat YAML or `--set min_replicas=2` keeps working; the dataclass says which fields belong to which backend.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields

from lifecycle.config import field
from lifecycle.errors import UserError


@dataclass
class LocalOptions:
    """`local` needs nothing beyond the shared fields: one uvicorn process, engines in threads."""


@dataclass
class RayOptions:
    min_replicas: int = field(1, help="Ray: replicas per model at least (autoscaling lower bound)")
    max_replicas: int = field(1, help="Ray: replicas per model at most; above min_replicas enables autoscaling")
    target_ongoing_requests: int = field(8, help="Ray autoscaling: requests in flight per replica to aim for")
    max_ongoing_requests: int = field(64, help="Ray: requests one replica accepts at once (queue beyond)")
    num_cpus: float = field(0.5, help="Ray: CPUs reserved per model replica; fractional packs replicas on small boxes")
    num_gpus: float = field(0.0, help="Ray: GPUs reserved per model replica (a GPU worker group under KubeRay)")
    max_replicas_per_node: int = field(0, help="Ray: most replicas of one model on one node; 1 puts each on its own node; 0 = no limit")
    router_num_cpus: float = field(0.1, help="Ray: CPUs reserved for the HTTP router replica")
    ray_address: str = field("", help="Ray: connect to this cluster (auto, or ray://host:10001); empty starts one here")
    ray_temp_dir: str = field("", help="Ray: temp dir for a cluster started here (short path: socket names are limited)")
    object_store_mb: int = field(100, help="Ray: object store size for a cluster started here")
    ray_num_cpus: int = field(0, help="Ray: CPUs a cluster started here advertises; 0 = all")
    startup_timeout_s: float = field(180.0, help="give up if replicas are not running after this long")

    def check(self) -> None:
        if self.min_replicas < 1 or self.max_replicas < self.min_replicas:
            raise UserError("need 1 <= min_replicas <= max_replicas")
        if self.num_gpus < 0 or self.max_replicas_per_node < 0:
            raise UserError("num_gpus and max_replicas_per_node must be >= 0")
        if self.num_cpus <= 0:
            raise UserError("num_cpus must be > 0 (fractions like 0.5 are fine)")


# Fields that describe a cluster started here, not the application: kept out of a generated Serve YAML.
CLUSTER_FIELDS = ("ray_address", "ray_temp_dir", "object_store_mb", "ray_num_cpus", "startup_timeout_s")


@dataclass(frozen=True)
class Backend:
    runner: str  # "module:function", called as run(cfg: ServeConfig, specs: list[dict])
    options: type
    describe: str
    own_temp_dir: bool = False  # a server started for a benchmark gets its own short temp dir (Ray sockets)

    def run(self, cfg, specs: list[dict]) -> None:
        module, fn = self.runner.split(":")
        getattr(importlib.import_module(module), fn)(cfg, specs)

    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self.options))


BACKENDS: dict[str, Backend] = {
    "ray": Backend("serve.ray_backend:run_ray", RayOptions,
                   "Ray Serve deployments (replicas, autoscaling, batching)", own_temp_dir=True),
    "local": Backend("serve.local:run_local", LocalOptions, "one uvicorn process"),
}


def backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise UserError(f"serving engine '{name}' is unknown; choose one of {names()}")
    return BACKENDS[name]


def names() -> str:
    return ", ".join(BACKENDS)


def help_text() -> str:
    return "; ".join(f"{n}: {b.describe}" for n, b in BACKENDS.items())
