"""The OpenAI-compatible FastAPI app, the same for every backend.

    app = build_app(LocalBackend.load([...]), settings)      # serve.local
    app = build_app(RayBackend(handles), settings)          # inside the Ray Serve router replica

Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health, GET /metrics,
and the container contract GET /ping, POST /invocations. A backend provides `names`, `complete`,
`stream` and `health`; it never sees HTTP. Every user mistake is a 4xx with OpenAI's error body.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import AsyncIterator, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from lifecycle.engine import Completion, Prompt, SamplingParams
from lifecycle.errors import UserError
from serve import protocol as P
from serve.auth import authorized, load_keys
from serve.metrics import CONTENT_TYPE_LATEST, Metrics

log = logging.getLogger("serve.app")
OPEN_PATHS = {"/health", "/ping"}  # health checks from load balancers carry no key
# Ray's errors for a replica that died or is saturated, matched by name so this module never imports ray
_UNAVAILABLE = {"RayActorError", "ActorDiedError", "ActorUnavailableError", "BackPressureError",
                "DeploymentUnavailableError", "ReplicaUnavailableError", "RequestCancelledError"}


class Backend(Protocol):
    names: list[str]

    async def complete(self, model: str, prompts: list[Prompt], params: SamplingParams,
                       n: int) -> tuple[list[Completion], int]: ...

    def stream(self, model: str, prompt: Prompt, params: SamplingParams) -> AsyncIterator[dict]: ...

    async def health(self) -> dict[str, str]: ...

    async def stats(self) -> dict[str, dict]: ...


def user_error(e: BaseException) -> UserError | None:
    """The UserError behind an exception, also when Ray wrapped it (RayTaskError keeps it as `cause`)."""
    for err in (getattr(e, "cause", None), e, e.__cause__):
        if isinstance(err, UserError):
            return err
    return None


def _to_api_error(e: BaseException) -> P.APIError:
    if isinstance(e, P.APIError):
        return e
    ue = user_error(e)
    if ue is not None:
        msg = str(ue).splitlines()[0] if str(ue) else "invalid request"
        code = "context_length_exceeded" if "context length" in msg else None
        return P.APIError(400, msg, param="messages" if code else None, code=code)
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return P.APIError(504, "the request did not finish within the server's time limit", type="timeout_error")
    if {c.__name__ for c in type(e).__mro__} & _UNAVAILABLE:
        return P.APIError(503, f"the model is restarting or overloaded ({type(e).__name__}); retry shortly",
                          type="server_error", code="unavailable")
    log.exception("request failed", exc_info=e)
    return P.APIError(500, f"internal error: {type(e).__name__}", type="server_error")


class _Guard:
    """ASGI middleware: API key, body size limit, and metrics for every response."""

    def __init__(self, app, keys: list[bytes], max_body: int, metrics: Metrics):
        self.app, self.keys, self.max_body, self.metrics = app, keys, max_body, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def send_recorded(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        headers = dict(scope.get("headers") or [])
        try:
            if scope["path"] not in OPEN_PATHS and not authorized(self.keys, headers.get(b"authorization")):
                err = P.APIError(401, "invalid or missing API key (send Authorization: Bearer KEY)",
                                 code="invalid_api_key")
                return await JSONResponse(err.body(), err.status)(scope, receive, send_recorded)
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                err = P.APIError(413, f"request body is larger than {self.max_body} bytes", code="body_too_large")
                return await JSONResponse(err.body(), err.status)(scope, receive, send_recorded)
            seen = [0]

            async def receive_limited():
                message = await receive()
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.max_body:
                    raise P.APIError(413, f"request body is larger than {self.max_body} bytes", code="body_too_large")
                return message

            await self.app(scope, receive_limited, send_recorded)
        finally:
            self.metrics.observe(scope["path"], status[0], time.perf_counter() - start)


def build_app(backend: Backend, settings: dict | None = None) -> FastAPI:
    s = {"max_body_bytes": 1_000_000, "request_timeout_s": 60.0, "max_tokens_limit": 1024,
         "default_max_tokens": 64, "api_key_env": "", "api_keys_file": ""} | (settings or {})
    keys = load_keys(s["api_key_env"], s["api_keys_file"])
    metrics = Metrics()
    created = int(time.time())
    timeout = float(s["request_timeout_s"])
    app = FastAPI(title="lifecycle OpenAI-compatible server", docs_url=None, redoc_url=None)
    app.state.backend, app.state.metrics = backend, metrics

    async def handle(cls: type, data: dict, chat: bool, default_model: str | None = None) -> Response:
        req = P.validate(cls, data)
        name = req.model or default_model
        if not name:
            raise P.APIError(400, "'model' is a required property", param="model", code="missing_required_parameter")
        if name not in backend.names:
            raise P.APIError(404, f"the model '{name}' does not exist; served: {', '.join(backend.names)}",
                             param="model", code="model_not_found")
        try:
            params = req.sampling(s["default_max_tokens"])
        except UserError as e:
            raise P.APIError(400, str(e)) from None
        if params.max_tokens > s["max_tokens_limit"]:
            raise P.APIError(400, f"max_tokens is {params.max_tokens}; this server allows at most "
                                  f"{s['max_tokens_limit']}", param="max_tokens", code="max_tokens_too_large")
        prompts = req.prompts()
        if req.stream:
            if req.n > 1 or len(prompts) > 1:
                raise P.APIError(400, "streaming supports one prompt and n=1", param="n")
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return await _stream(name, prompts[0], params, chat, include_usage)
        outs, prompt_tokens = await asyncio.wait_for(backend.complete(name, prompts, params, req.n), timeout)
        metrics.tokens(name, prompt_tokens, sum(o.completion_tokens for o in outs))
        if chat:
            return JSONResponse(P.chat_response(name, outs, prompt_tokens))
        echoed = [p for p in prompts for _ in range(req.n)] if getattr(req, "echo", False) else None
        return JSONResponse(P.completion_response(name, outs, prompt_tokens, echoed))

    async def _stream(name: str, prompt: Prompt, params: SamplingParams, chat: bool, include_usage: bool):
        deadline = time.monotonic() + timeout
        events = backend.stream(name, prompt, params)
        try:  # the first event comes after validation, so a bad request still gets a 4xx status
            head = await asyncio.wait_for(events.__anext__(), timeout)
        except BaseException:
            await events.aclose()
            raise
        prompt_tokens = head.get("prompt_tokens", 0)

        async def body():
            w = P.ChunkWriter(name, chat)
            tokens = 0
            try:
                if chat:
                    yield w.start()
                while True:
                    try:
                        ev = await asyncio.wait_for(events.__anext__(), max(deadline - time.monotonic(), 0.001))
                    except StopAsyncIteration:
                        break
                    tokens = ev["tokens"] or tokens
                    yield w.text(ev["text"], ev["finish_reason"])
                if include_usage:
                    yield w.usage(prompt_tokens, tokens)
            except Exception as e:  # the status line is gone: report in-band, then end the stream
                yield P.ChunkWriter.error(_to_api_error(e))
            finally:
                await events.aclose()
                metrics.tokens(name, prompt_tokens, tokens)
            yield P.ChunkWriter.DONE

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def guarded(route):
        """Every failure inside a route becomes an OpenAI error body; nothing escapes as a bare 500."""
        @functools.wraps(route)
        async def wrapper(*args, **kwargs):
            try:
                return await route(*args, **kwargs)
            except Exception as e:
                err = _to_api_error(e)
                return JSONResponse(err.body(), err.status, headers=err.headers)
        return wrapper

    @app.post("/v1/chat/completions")
    @guarded
    async def chat_completions(request: Request):
        return await handle(P.ChatRequest, P.parse_json(await request.body()), chat=True)

    @app.post("/v1/completions")
    @guarded
    async def completions(request: Request):
        return await handle(P.CompletionRequest, P.parse_json(await request.body()), chat=False)

    @app.get("/v1/models")
    async def models():
        return P.models_list(backend.names, created)

    @app.get("/health")
    @guarded
    async def health():
        states = await backend.health()
        ok = all(v == "ready" for v in states.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "models": states}, 200 if ok else 503)

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render() + Metrics.engine_lines(await backend.stats()), media_type=CONTENT_TYPE_LATEST)

    @app.get("/ping")
    @guarded
    async def ping():
        states = await backend.health()
        return Response(status_code=200 if all(v == "ready" for v in states.values()) else 503)

    @app.post("/invocations")
    @guarded
    async def invocations(request: Request):
        """Container contract: a chat body (has `messages`) or a completion body; `model` is optional."""
        data = P.parse_json(await request.body())
        chat = "messages" in data
        return await handle(P.ChatRequest if chat else P.CompletionRequest, data, chat, default_model=backend.names[0])

    app.add_middleware(_Guard, keys=keys, max_body=int(s["max_body_bytes"]), metrics=metrics)
    return app
