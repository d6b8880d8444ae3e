"""`lifecycle serve`, `lifecycle batch` and `lifecycle deploy`: the serving layer's commands.

    lifecycle serve --model tiny-arith                         # Ray Serve on 127.0.0.1:8000
    lifecycle serve --model tiny-arith --engine local          # one uvicorn process
    lifecycle serve --model tiny-arith --write-config serve.yaml && serve run serve.yaml
    lifecycle serve --release releases/r1 --engine local       # a shipped release, under its name
    lifecycle batch --model tiny-arith --input in.jsonl --output out.jsonl
    lifecycle batch --model tiny-arith -i in.jsonl -o out.jsonl --ray-address 127.0.0.1:6379 --actors 2
    lifecycle deploy --release releases/r1 --image registry/lifecycle:0.1 --output deploy/out

This module stays light: fastapi, ray and torch are imported inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lifecycle.errors import UserError


def _describe() -> str:
    from lifecycle.config import describe
    from serve.config import ServeConfig

    return describe(ServeConfig)


def _config(config, sets, overrides: dict):
    from lifecycle.config import build
    from serve.auth import load_keys
    from serve.config import ServeConfig
    from serve.host import parse_model_spec

    cfg = build(ServeConfig, config, overrides, sets)
    if not cfg.models:
        raise UserError("no model to serve: pass --model DIR (repeatable), e.g. --model tiny-arith")
    specs = [parse_model_spec(m) for m in cfg.models]
    names = [s["name"] for s in specs]
    if len(set(names)) != len(names):
        raise UserError(f"two models share a name ({', '.join(names)}); name them with --model NAME=DIR")
    load_keys(cfg.api_key_env, cfg.api_keys_file)  # fail here, not in a replica
    return cfg, specs


ModelsOpt = Annotated[Optional[list[str]], typer.Option(
    "--model", "-m", help="artifact dir, built-in name, NAME=DIR, or mock (repeat to serve several)")]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML file with ServeConfig fields")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="override a config field: key=value")]


def _backends() -> str:
    from serve.backends import help_text

    return help_text()


def register(root: typer.Typer) -> None:
    """Add `serve`, `batch` and `deploy` to the root CLI."""

    @root.command(epilog=_describe())
    def serve(
        model: ModelsOpt = None,
        release: Annotated[Optional[Path], typer.Option(help="serve a shipped release (lifecycle ship) under its name; instead of --model")] = None,
        engine: Annotated[Optional[str], typer.Option(help="serving backend (default ray): " + _backends())] = None,
        host: Annotated[Optional[str], typer.Option(help="bind address")] = None,
        port: Annotated[Optional[int], typer.Option(help="HTTP port")] = None,
        api_key_env: Annotated[Optional[str], typer.Option(help="env var holding the API key (Bearer)")] = None,
        api_keys_file: Annotated[Optional[str], typer.Option(help="file of accepted API keys, one per line")] = None,
        allow_unauthenticated: Annotated[Optional[bool], typer.Option(
            "--allow-unauthenticated", help="serve on a non-loopback --host without an API key")] = None,
        write_config: Annotated[Optional[Path], typer.Option(help="write the Serve config YAML here and exit (for `serve run`)")] = None,
        config: ConfigOpt = None, set: SetOpt = None,
    ) -> None:
        """Serve artifacts behind an OpenAI-compatible API (chat, completions, streaming, /metrics)."""
        if release:
            if model:
                raise UserError("give either --release DIR or --model DIR, not both")
            from lifecycle.release.releases import served_artifact

            target = served_artifact(release)  # refuses a refused or altered release
            model = [f"{target['name']}={target['path']}"]
        cfg, specs = _config(config, set, {"models": model, "engine": engine, "host": host, "port": port,
                                           "api_key_env": api_key_env, "api_keys_file": api_keys_file,
                                           "allow_unauthenticated": allow_unauthenticated})
        cfg.check_exposure()
        if write_config:
            from serve.config import write_serve_config

            write_serve_config(cfg, specs, str(write_config))
            print(f"wrote {write_config}; run it with: serve run {write_config}")
            return
        from serve.backends import backend

        backend(cfg.engine).run(cfg, specs)

    @root.command()
    def batch(
        model: Annotated[str, typer.Option("--model", "-m", help="artifact dir or built-in name")],
        input: Annotated[Path, typer.Option("--input", "-i", help="JSONL: one {'messages': [...]} or {'prompt': ...} per line")],
        output: Annotated[Path, typer.Option("--output", "-o", help="JSONL results, line for line; rerun to resume")],
        max_tokens: Annotated[int, typer.Option(help="default max_tokens for lines without one")] = 64,
        temperature: Annotated[float, typer.Option(help="default temperature for lines without one")] = 0.0,
        batch_size: Annotated[int, typer.Option(help="lines per engine call")] = 16,
        threads: Annotated[int, typer.Option(help="torch threads")] = 1,
        ray: Annotated[bool, typer.Option("--ray", help="run on Ray Data (a cluster, or a local one)")] = False,
        ray_address: Annotated[str, typer.Option(help="with --ray: join this cluster (HOST:PORT or auto); empty starts one here")] = "",
        actors: Annotated[int, typer.Option(help="with --ray: engine actors, spread over the cluster's nodes")] = 1,
        num_cpus: Annotated[float, typer.Option(help="with --ray: CPUs reserved per engine actor")] = 0.5,
        restart: Annotated[bool, typer.Option(help="ignore an existing output and start over")] = False,
    ) -> None:
        """Offline batch inference: resumable, order-preserving, failures reported per line."""
        from serve.batch import run_batch

        run_batch(model, input, output, max_tokens=max_tokens, temperature=temperature, batch_size=batch_size,
                  threads=threads, use_ray=ray or bool(ray_address), restart=restart, ray_address=ray_address,
                  actors=actors, num_cpus=num_cpus)

    @root.command()
    def deploy(
        output: Annotated[Path, typer.Option("--output", "-o", help="folder for serve-config.yaml and rayservice.yaml")],
        release: Annotated[Optional[Path], typer.Option(help="release directory (lifecycle ship) to deploy")] = None,
        model: ModelsOpt = None,
        image: Annotated[str, typer.Option(help="container image built from deploy/Dockerfile")] = "lifecycle-serve:latest",
        name: Annotated[str, typer.Option(help="RayService name")] = "lifecycle",
        workers: Annotated[int, typer.Option(help="Ray worker pods of the default CPU group (without --cluster)")] = 1,
        cluster: Annotated[Optional[Path], typer.Option(help="YAML of worker groups (CPU/GPU) and autoscaler, e.g. configs/deploy-kuberay.yaml")] = None,
        config: ConfigOpt = None, set: SetOpt = None,
    ) -> None:
        """Render a Serve config and a KubeRay RayService manifest for a release or artifacts."""
        from deploy.render import render

        for path in render(output, release=release, models=model or [], image=image, name=name,
                           workers=workers, config=config, sets=set, cluster=cluster):
            print(f"wrote {path}")
