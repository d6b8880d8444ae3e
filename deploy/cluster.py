"""The Ray cluster a RayService runs on: head, worker groups (CPU and GPU) and the autoscaler.

    lifecycle deploy --release releases/r1 --cluster configs/deploy-kuberay.yaml --output out/

A cluster file is YAML with the fields of `ClusterSpec`; each `worker_groups` entry has the fields of
`WorkerGroup`. Without a file, one CPU group of `--workers` pods that the autoscaler may grow to 4.
KubeRay's in-tree autoscaler adds worker pods when Serve asks for replicas no node can place (autoscaled
`max_replicas`, or `num_gpus` per replica that only a GPU group offers) and removes idle ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field as dc_field
from pathlib import Path

from lifecycle.config import field, from_dict, load_yaml
from lifecycle.errors import UserError

SERVE_PORT = 8000
RELEASE_ROOT = "/opt/release"


@dataclass
class WorkerGroup:
    name: str = field("cpu", help="group name (a DNS label)")
    replicas: int = field(1, help="pods at start; the autoscaler moves it within min..max")
    min_replicas: int = field(1, help="pods the autoscaler keeps at least")
    max_replicas: int = field(4, help="pods the autoscaler may add up to")
    cpu: str = field("2", help="CPU request and limit per pod")
    memory: str = field("4Gi", help="memory request and limit per pod")
    gpus: int = field(0, help="nvidia.com/gpu per pod (Ray advertises them as GPUs)")
    node_selector: dict = field({}, help="Kubernetes nodeSelector for the group's pods")
    tolerations: list = field([], help="Kubernetes tolerations (GPU nodes are often tainted)")
    resources: dict = field({}, help="Ray custom resources each pod advertises, e.g. {l4: 1}")
    ray_start_params: dict = field({}, help="extra `ray start` flags, as strings")

    def check(self) -> None:
        if not 0 <= self.min_replicas <= self.replicas <= self.max_replicas or self.max_replicas < 1:
            raise UserError(f"worker group '{self.name}': need 0 <= min_replicas <= replicas <= max_replicas, max >= 1")
        if self.gpus < 0:
            raise UserError(f"worker group '{self.name}': gpus must be >= 0")


@dataclass
class ClusterSpec:
    head_cpu: str = field("1", help="head pod CPU (control plane and HTTP proxy; no replicas run there)")
    head_memory: str = field("2Gi", help="head pod memory")
    autoscaling: bool = field(True, help="KubeRay's in-tree autoscaler (enableInTreeAutoscaling)")
    idle_timeout_s: int = field(60, help="autoscaler: an idle worker pod goes away after this long")
    upscaling_mode: str = field("Default", help="autoscaler: Default, Aggressive or Conservative")
    ray_client: bool = field(False, help="open Ray Client's port 10001 on the head Service (it runs any code sent to it)")
    release_claim: str = field("", help="PVC holding the release (or the models), mounted read-only at /opt/release "
                               "(/opt/models for --model); empty = <name>-release")
    worker_groups: list = field([], help="worker groups (WorkerGroup fields); empty = one CPU group of --workers pods")
    groups: list = dc_field(default_factory=list, repr=False)  # parsed worker_groups

    def __post_init__(self) -> None:
        if self.upscaling_mode not in ("Default", "Aggressive", "Conservative"):
            raise UserError("upscaling_mode must be Default, Aggressive or Conservative")
        for g in self.worker_groups:
            if not isinstance(g, dict):
                raise UserError("each worker_groups entry must be a mapping of WorkerGroup fields")
        self.groups = [from_dict(WorkerGroup, g) for g in self.worker_groups]
        for g in self.groups:
            g.check()
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise UserError(f"worker group names must differ: {', '.join(names)}")


def load_cluster(path: Path | None, workers: int) -> ClusterSpec:
    spec = from_dict(ClusterSpec, load_yaml(path)) if path else ClusterSpec()
    if not spec.groups:
        spec.groups = [WorkerGroup(replicas=workers, min_replicas=workers, max_replicas=max(workers, 4))]
    return spec


def _env(key_env: str, key_secret: str) -> list[dict]:
    env = [{"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}, {"name": "OMP_NUM_THREADS", "value": "1"},
           {"name": "RAY_SERVE_THROUGHPUT_OPTIMIZED", "value": "1"}]
    if key_env:
        env.append({"name": key_env, "valueFrom": {"secretKeyRef": {"name": key_secret, "key": "api-key"}}})
    return env


def _pod(image: str, container: str, cpu: str, memory: str, ports: list[dict], env: list[dict], claim: str,
         mount: str, gpus: int = 0, node_selector: dict | None = None, tolerations: list | None = None) -> dict:
    limits = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": gpus} if gpus else {})}
    spec: dict = {
        "containers": [{
            "name": container, "image": image, "ports": ports, "env": env,
            "resources": {"requests": dict(limits), "limits": limits},
            # the release is mounted, not baked into the image: one image serves every release
            "volumeMounts": [{"name": "release", "mountPath": mount, "readOnly": True}],
        }],
        "volumes": [{"name": "release", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
    }
    if node_selector:
        spec["nodeSelector"] = {str(k): str(v) for k, v in node_selector.items()}
    if tolerations:
        spec["tolerations"] = tolerations
    return {"spec": spec}


def _start_params(group: WorkerGroup) -> dict:
    params = {str(k): str(v) for k, v in group.ray_start_params.items()}
    if group.gpus:
        params.setdefault("num-gpus", str(group.gpus))
    if group.resources:  # KubeRay passes this through to `ray start --resources` (a JSON string in quotes)
        params.setdefault("resources", "'" + json.dumps(group.resources, sort_keys=True) + "'")
    return params


def ray_cluster(spec: ClusterSpec, name: str, image: str, ray_version: str, key_env: str,
                mount: str = RELEASE_ROOT) -> dict:
    """The rayClusterConfig of a RayService; every pod mounts the models' volume read-only at `mount`."""
    env = _env(key_env, f"{name}-api-key")
    claim = spec.release_claim or f"{name}-release"
    # the head Service gets exactly these ports; the operator needs "dashboard" there to submit the Serve
    # config, so it stays, on a ClusterIP Service with no Ingress (keep it in-cluster: see deploy/README.md)
    head_ports = [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                  {"containerPort": SERVE_PORT, "name": "serve"}]
    if spec.ray_client:
        head_ports.append({"containerPort": 10001, "name": "client"})
    cluster: dict = {
        "rayVersion": ray_version,
        "enableInTreeAutoscaling": spec.autoscaling,
        "headGroupSpec": {
            "serviceType": "ClusterIP", "enableIngress": False,
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": _pod(image, "ray-head", spec.head_cpu, spec.head_memory, head_ports, env, claim, mount),
        },
        "workerGroupSpecs": [{
            "groupName": g.name, "replicas": g.replicas, "minReplicas": g.min_replicas,
            "maxReplicas": g.max_replicas, "rayStartParams": _start_params(g),
            "template": _pod(image, "ray-worker", g.cpu, g.memory, [], env, claim, mount, g.gpus, g.node_selector,
                             g.tolerations),
        } for g in spec.groups],
    }
    if spec.autoscaling:
        cluster["autoscalerOptions"] = {"upscalingMode": spec.upscaling_mode,
                                        "idleTimeoutSeconds": spec.idle_timeout_s}
    return cluster
