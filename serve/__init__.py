"""Serving layer: an OpenAI-compatible API over any artifact's Engine, on Ray Serve or one local process.

    lifecycle serve --model tiny-arith                  # Ray Serve (replicas, autoscaling, batching)
    lifecycle serve --model tiny-arith --engine local   # one uvicorn process
    lifecycle batch --model tiny-arith --input in.jsonl --output out.jsonl

Modules: protocol (OpenAI wire format), app (the FastAPI app), host (one model: validation, batching,
streaming), local and ray_backend (where models run), auth, metrics, batch (offline), config, mock.
"""
