"""`lifecycle serve` options: one dataclass, YAML defaults (`--config configs/serve-*.yaml`), CLI overrides.

The app's own limits (`app_settings`) travel to every Ray replica as a plain dict, so the generated Serve
YAML carries them too.
"""

from __future__ import annotations

from dataclasses import dataclass

from lifecycle.config import field
from lifecycle.errors import UserError
from serve.backends import BACKENDS, CLUSTER_FIELDS, LocalOptions, RayOptions, backend, help_text

APP_NAME = "lifecycle"
IMPORT_PATH = "serve.ray_backend:build_openai_app"
APP_KEYS = ("max_body_bytes", "request_timeout_s", "max_tokens_limit", "default_max_tokens",
            "api_key_env", "api_keys_file")


@dataclass
class SharedOptions:
    """Fields every backend uses."""

    models: list = field([], help="artifacts to serve: DIR, NAME=DIR, built-in name, or mock (repeatable --model)")
    engine: str = field("ray", help=help_text())
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
    max_queued_requests: int = field(64, help="requests per model that may wait beyond those being served; more get 429 with Retry-After")
    drain_timeout_s: float = field(10.0, help="on SIGTERM, how long open requests may finish before they are cut")
    allow_unauthenticated: bool = field(False, help="serve on a non-loopback host without an API key (behind your own auth proxy)")


@dataclass
class ServeConfig(RayOptions, LocalOptions, SharedOptions):
    """The shared fields, then each backend's own (its options dataclass in serve/backends.py)."""

    def __post_init__(self) -> None:
        backend(self.engine)  # an unknown name lists the known ones
        if not 0 < self.port < 65536:
            raise UserError(f"port must be 1-65535, got {self.port}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise UserError("default_max_tokens must not exceed max_tokens_limit")
        if self.max_queued_requests < 0 or self.drain_timeout_s < 0:
            raise UserError("max_queued_requests and drain_timeout_s must be >= 0")
        for b in BACKENDS.values():
            if hasattr(b.options, "check"):
                b.options.check(self)

    def check_exposure(self) -> None:
        """Refuse to open the API to the network with no key, unless the user said so explicitly."""
        if is_loopback(self.host) or self.api_key_env or self.api_keys_file or self.allow_unauthenticated:
            return
        raise UserError(f"refusing to serve on {self.host} without an API key: pass --api-key-env VAR or "
                        "--api-keys-file FILE, or --allow-unauthenticated if a proxy in front authenticates")

    def app_settings(self) -> dict:
        return {k: getattr(self, k) for k in APP_KEYS}


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_config(cfg: ServeConfig, specs: list[dict]) -> dict:
    """A Serve config (the `serve run` / `serve deploy` / RayService schema) for these models."""
    defaults = ServeConfig()
    options = {k: getattr(cfg, k) for k in ServeConfig.__dataclass_fields__
               if k not in ("models", "engine", "host", "port", *CLUSTER_FIELDS) and getattr(cfg, k) != getattr(defaults, k)}
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
