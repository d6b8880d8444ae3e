"""Render a Serve config and a KubeRay RayService manifest for a release (or artifacts).

    lifecycle deploy --release releases/r1 --image registry/lifecycle:0.1 --output deploy/out
    kubectl apply -f deploy/out/rayservice.yaml

The image (deploy/Dockerfile) holds the code and every format's runtime, no model: each pod mounts a
volume read-only, the release at /opt/release or loose artifacts at /opt/models/<name>, so one image
serves every release. Worker groups and the autoscaler come from `--cluster FILE` (deploy/cluster.py).
A release whose gates refused it is not deployed.
"""

from __future__ import annotations

from pathlib import Path

from deploy.cluster import RELEASE_ROOT, SERVE_PORT, ClusterSpec, load_cluster, ray_cluster
from lifecycle.errors import UserError

MODELS_ROOT = "/opt/models"
RAY_VERSION = "2.60.0"
API_KEY_ENV = "LIFECYCLE_API_KEY"  # the variable the image and the manifest use by default


def release_models(release: Path) -> list[dict]:
    """The model a shipped release serves, with its path inside the image (checked as `serve --release` does)."""
    from lifecycle.release.releases import served_artifact

    target = served_artifact(release)
    return [{"name": target["name"], "path": f"{RELEASE_ROOT}/{target['artifact']}"}]


def rayservice(serve_cfg: dict, name: str, image: str, workers: int = 1, cluster: ClusterSpec | None = None,
               mount: str = RELEASE_ROOT) -> dict:
    """A ray.io/v1 RayService: the Serve config as serveConfigV2 and the cluster of `cluster` (head without
    replicas, worker groups, autoscaler). When the app reads its API key from a variable, every pod gets it
    from the Secret `<name>-api-key`."""
    import yaml

    key_env = serve_cfg["applications"][0]["args"]["options"].get("api_key_env", "")
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_cfg, sort_keys=False),
            "rayClusterConfig": ray_cluster(cluster or load_cluster(None, workers), name, image, RAY_VERSION, key_env, mount),
        },
    }


def _block_str(dumper, value: str):
    """Multi-line strings (serveConfigV2) as readable `|` blocks instead of escaped one-liners."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


def _dumper():
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(str, _block_str)
    return Dumper


def render(output: Path, release: Path | None = None, models: list[str] | None = None, image: str = "lifecycle-serve:latest",
           name: str = "lifecycle", workers: int = 1, config: Path | None = None, sets: list[str] | None = None,
           cluster: Path | None = None) -> list[Path]:
    """Write serve-config.yaml and rayservice.yaml into `output`; return their paths."""
    import yaml

    from lifecycle.config import build
    from serve.config import ServeConfig, serve_config
    from serve.host import parse_model_spec

    spec = load_cluster(cluster, workers)  # a bad cluster file fails before anything is written
    if bool(release) == bool(models):
        raise UserError("give either --release DIR or --model DIR (repeatable), not both or neither")
    if release:
        specs = release_models(release)
    else:
        specs = [parse_model_spec(m) for m in models or []]
        specs = [s if s["path"] == "mock" else {"name": s["name"], "path": f"{MODELS_ROOT}/{s['name']}"} for s in specs]
    cfg = build(ServeConfig, config, {"host": "0.0.0.0", "port": SERVE_PORT}, sets)
    if not (cfg.api_key_env or cfg.api_keys_file or cfg.allow_unauthenticated):
        cfg.api_key_env = API_KEY_ENV  # the pods serve on 0.0.0.0: a key unless the user opts out
    scfg = serve_config(cfg, specs)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "serve-config.yaml", out / "rayservice.yaml"]
    paths[0].write_text("# serve run serve-config.yaml   (paths are inside the image from deploy/Dockerfile)\n"
                        + yaml.safe_dump(scfg, sort_keys=False))
    paths[1].write_text("# kubectl apply -f rayservice.yaml   (needs the KubeRay operator)\n"
                        + yaml.dump(rayservice(scfg, name, image, cluster=spec,
                                             mount=RELEASE_ROOT if release else MODELS_ROOT), Dumper=_dumper(), sort_keys=False))
    return paths
