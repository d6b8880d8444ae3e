"""`lifecycle serve` options: one dataclass, YAML defaults (`--config configs/serve-*.yaml`), CLI overrides.

The app's own limits (`app_settings`) travel to every Ray replica as a plain dict, so the generated Serve
YAML carries them too.
"""

from __future__ import annotations

from dataclasses import dataclass

from lifecycle.config import field
from lifecycle.errors import UserError

APP_NAME = "lifecycle"
IMPORT_PATH = "serve.ray_backend:build_openai_app"
APP_KEYS = ("max_body_bytes", "request_timeout_s", "max_tokens_limit", "default_max_tokens",
            "api_key_env", "api_keys_file")


@dataclass
class ServeConfig:
    models: list = field([], help="artifacts to serve: DIR, NAME=DIR, built-in name, or mock (repeatable --model)")
    engine: str = field("ray", help="ray: Ray Serve deployments (replicas, autoscaling, batching); local: one uvicorn process")
    host: str = field("127.0.0.1", help="address to bind; 0.0.0.0 exposes the server to the network")
    port: int = field(8000, help="HTTP port")
    api_key_env: str = field("", help="environment variable holding the API key; empty = no auth")
    api_keys_file: str = field("", help="file with accepted API keys, one per line")
    max_body_bytes: int = field(1_000_000, help="largest request body accepted (413 above it)")
    request_timeout_s: float = field(60.0, help="per-request deadline; a slower request gets 504")
    max_tokens_limit: int = field(1024, help="largest max_tokens a request may ask for (400 above it)")
    default_max_tokens: int = field(64, help="max_tokens when a request gives none")
    threads: int = field(1, help="torch threads per model replica (1 is best on small shared CPUs)")
    max_batch_size: int = field(16, help="most requests merged into one engine call (dynamic batching)")
    batch_wait_timeout_s: float = field(0.0, help="least wait to fill a batch (0: a lone request starts at once; under load batches fill anyway)")
    stream_interval_ms: float = field(20.0, help="merge streamed tokens produced within this window into one SSE event; 0 = one event per token")
    min_replicas: int = field(1, help="Ray: replicas per model at least (autoscaling lower bound)")
    max_replicas: int = field(1, help="Ray: replicas per model at most; above min_replicas enables autoscaling")
    target_ongoing_requests: int = field(8, help="Ray autoscaling: requests in flight per replica to aim for")
    max_ongoing_requests: int = field(64, help="Ray: requests one replica accepts at once (queue beyond)")
    num_cpus: float = field(0.5, help="Ray: CPUs reserved per model replica; fractional packs replicas on small boxes")
    router_num_cpus: float = field(0.1, help="Ray: CPUs reserved for the HTTP router replica")
    ray_address: str = field("", help="Ray: connect to this cluster (auto, or ray://host:10001); empty starts one here")
    ray_temp_dir: str = field("", help="Ray: temp dir for a cluster started here (short path: socket names are limited)")
    object_store_mb: int = field(100, help="Ray: object store size for a cluster started here")
    ray_num_cpus: int = field(0, help="Ray: CPUs a cluster started here advertises; 0 = all")
    startup_timeout_s: float = field(180.0, help="give up if replicas are not running after this long")

    def __post_init__(self) -> None:
        if self.engine not in ("ray", "local"):
            raise UserError(f"engine must be ray or local, got {self.engine!r}")
        if not 0 < self.port < 65536:
            raise UserError(f"port must be 1-65535, got {self.port}")
        if self.min_replicas < 1 or self.max_replicas < self.min_replicas:
            raise UserError("need 1 <= min_replicas <= max_replicas")
        if self.default_max_tokens > self.max_tokens_limit:
            raise UserError("default_max_tokens must not exceed max_tokens_limit")
        if self.num_cpus <= 0:
            raise UserError("num_cpus must be > 0 (fractions like 0.5 are fine)")

    def app_settings(self) -> dict:
        return {k: getattr(self, k) for k in APP_KEYS}


def serve_config(cfg: ServeConfig, specs: list[dict]) -> dict:
    """A Serve config (the `serve run` / `serve deploy` / RayService schema) for these models."""
    defaults = ServeConfig()
    options = {k: getattr(cfg, k) for k in ServeConfig.__dataclass_fields__
               if k not in ("models", "engine", "host", "port", "ray_address", "ray_temp_dir", "object_store_mb",
                            "ray_num_cpus", "startup_timeout_s") and getattr(cfg, k) != getattr(defaults, k)}
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": cfg.host, "port": cfg.port, "request_timeout_s": cfg.request_timeout_s + 5},
        "applications": [{"name": APP_NAME, "route_prefix": "/", "import_path": IMPORT_PATH,
                          "args": {"models": specs, "options": options}}],
    }


def write_serve_config(cfg: ServeConfig, specs: list[dict], path: str) -> None:
    import yaml

    text = yaml.safe_dump(serve_config(cfg, specs), sort_keys=False)
    with open(path, "w") as f:
        f.write(f"# serve run {path}\n# generated by: lifecycle serve --write-config; edit replicas and options here\n")
        f.write(text)
