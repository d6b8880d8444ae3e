"""The OpenAI-compatible FastAPI app, the same for every backend.

    app = build_app(LocalBackend.load([...]), settings)      # serve.local
    app = build_app(RayBackend(handles), settings)          # inside the Ray Serve router replica

Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /v1/models/{id}, GET /health,
GET /metrics, GET /openapi.json, and the container contract GET /ping, POST /invocations. A backend provides
`names`, `complete`, `stream` and `health`; it never sees HTTP. Every user mistake, unknown routes and methods
included, is a 4xx with OpenAI's error body; a failure of ours is a 5xx with the same shape.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from typing import AsyncIterator, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lifecycle.engine import Completion, Prompt, SamplingParams
from lifecycle.errors import UserError
from serve import protocol as P
from serve import responses as R
from serve.openapi import document, install
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
            if length is not None and not length.isdigit():
                err = P.APIError(400, "Content-Length is not a number", code="bad_header")
                return await JSONResponse(err.body(), err.status)(scope, receive, send_recorded)
            if length is not None and int(length) > self.max_body:
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


OFF_LOOP_BYTES = 64 * 1024  # bodies larger than this are parsed and validated on a worker thread


def _ascii(names: list[str]) -> str:
    """Field names for a header value: printable ASCII only (JSON escapes for the rest)."""
    return ",".join(json.dumps(n)[1:-1] for n in names)[:512]


def build_app(backend: Backend, settings: dict | None = None) -> FastAPI:
    s = {"max_body_bytes": 1_000_000, "request_timeout_s": 60.0, "max_tokens_limit": 1024,
         "default_max_tokens": 64, "api_key_env": "", "api_keys_file": ""} | (settings or {})
    keys = load_keys(s["api_key_env"], s["api_keys_file"])
    metrics = Metrics()
    created = int(time.time())
    timeout = float(s["request_timeout_s"])
    app = FastAPI(title="lifecycle OpenAI-compatible server", docs_url=None, redoc_url=None)
    app.state.backend, app.state.metrics = backend, metrics

    async def parsed(request: Request, cls: type | None) -> tuple[dict, P._Sampling | None]:
        """Body -> (JSON object, validated request); a large body is handled off the event loop."""
        raw = await request.body()

        def work(raw=raw):
            data = P.parse_json(raw)
            if cls is None:  # /invocations: the body says which request it is; `model` may be left out
                chat = "messages" in data
                return data, P.validate(P.InvocationChat if chat else P.InvocationCompletion, data)
            return data, P.validate(cls, data)
        return await asyncio.to_thread(work) if len(raw) > OFF_LOOP_BYTES else work()

    async def handle(req: P._Sampling, request: Request, default_model: str | None = None) -> Response:
        chat = isinstance(req, P.ChatRequest)
        strict = request.headers.get(P.STRICT_HEADER, "").strip().lower() in ("1", "true", "yes")
        ignored = P.check_ignored(req, strict)
        headers = {"X-Lifecycle-Ignored": _ascii(ignored)} if ignored else {}
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
        echo = bool(getattr(req, "echo", False))
        want_lp = bool(req.logprobs) if chat else req.logprobs is not None
        if req.stream:
            if echo and any(not isinstance(p, str) for p in prompts):
                raise P.APIError(400, "echo of token-id prompts is not supported when streaming", param="echo")
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return await _stream(name, prompts, params, chat, req.n, include_usage, want_lp,
                                 [p if echo else "" for p in prompts], headers)
        outs, prompt_tokens = await asyncio.wait_for(backend.complete(name, prompts, params, req.n), timeout)
        metrics.tokens(name, prompt_tokens, sum(o.completion_tokens for o in outs))
        if chat:
            return JSONResponse(R.chat_response(name, outs, prompt_tokens, want_lp), headers=headers)
        echoed = None
        if echo:
            echoed = [p if isinstance(p, str) else _text_of(o.prompt_logprobs)
                      for p, o in zip((p for p in prompts for _ in range(req.n)), outs)]
        return JSONResponse(R.completion_response(name, outs, prompt_tokens, echoed, want_lp), headers=headers)

    async def _stream(name: str, prompts: list[Prompt], params: SamplingParams, chat: bool, n: int,
                      include_usage: bool, want_lp: bool, echoes: list[str], headers: dict):
        """Every choice (n per prompt) streams at once; chunks carry the choice's index."""
        deadline = time.monotonic() + timeout
        sources: list = []
        heads: list[int] = []
        try:  # each first event comes after validation, so a bad request still gets a 4xx status
            for p in prompts:
                for _ in range(n):
                    sources.append(backend.stream(name, p, params))
                    head = await asyncio.wait_for(sources[-1].__anext__(), max(deadline - time.monotonic(), 0.001))
                    heads.append(head.get("prompt_tokens", 0))
        except BaseException:
            await asyncio.gather(*(src.aclose() for src in sources), return_exceptions=True)
            raise
        prompt_tokens = sum(heads[k] for k in range(0, len(sources), n))
        starts = [len(echoes[k // n]) for k in range(len(sources))]

        async def body():
            w = R.ChunkWriter(name, chat)
            q: asyncio.Queue = asyncio.Queue()
            tokens = [0] * len(sources)

            async def pump(k: int, src) -> None:
                try:
                    async for ev in src:
                        q.put_nowait((k, ev))
                except Exception as e:
                    q.put_nowait((k, e))
                finally:
                    q.put_nowait((k, None))

            tasks = [asyncio.create_task(pump(k, src)) for k, src in enumerate(sources)]
            try:
                for k in range(len(sources)):
                    if chat:
                        yield w.start(k)
                    elif echoes[k // n]:
                        yield w.text(echoes[k // n], None, k)
                live = len(sources)
                while live:
                    k, ev = await asyncio.wait_for(q.get(), max(deadline - time.monotonic(), 0.001))
                    if ev is None:
                        live -= 1
                        continue
                    if isinstance(ev, Exception):
                        raise ev
                    tokens[k] = ev["tokens"] or tokens[k]
                    yield w.text(ev["text"], ev["finish_reason"], k,
                                 (ev.get("logprobs") or []) if want_lp else None, starts[k])
                if include_usage:
                    yield w.usage(prompt_tokens, sum(tokens))
            except Exception as e:  # the status line is gone: report in-band, then end the stream
                yield R.ChunkWriter.error(_to_api_error(e).body())
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await asyncio.gather(*(src.aclose() for src in sources), return_exceptions=True)
                metrics.tokens(name, prompt_tokens, sum(tokens))
            yield R.ChunkWriter.DONE

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})

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

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        """Unknown routes (404) and wrong methods (405) answer in OpenAI's error shape too."""
        what = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        err = P.APIError(exc.status_code, what.get(exc.status_code, str(exc.detail)),
                         code={404: "not_found", 405: "method_not_allowed"}.get(exc.status_code))
        return JSONResponse(err.body(), err.status, headers=dict(exc.headers or {}))

    @app.post("/v1/chat/completions", **document(P.ChatRequest, R.ChatCompletion, R.ChatCompletionChunk))
    @guarded
    async def chat_completions(request: Request):
        return await handle((await parsed(request, P.ChatRequest))[1], request)

    @app.post("/v1/completions", **document(P.CompletionRequest, R.TextCompletion, R.TextCompletionChunk))
    @guarded
    async def completions(request: Request):
        return await handle((await parsed(request, P.CompletionRequest))[1], request)

    @app.get("/v1/models", **document(None, R.ModelList))
    @guarded
    async def models():
        return JSONResponse(R.models_list(backend.names, created))

    @app.get("/v1/models/{model_id:path}", **document(None, R.ModelCard))
    @guarded
    async def model(model_id: str):
        if model_id not in backend.names:
            raise P.APIError(404, f"the model '{model_id}' does not exist", param="model", code="model_not_found")
        return JSONResponse(R.model_card(model_id, created))

    @app.get("/health", **document(None, R.Health, unavailable=True))
    @guarded
    async def health():
        states = await backend.health()
        ok = all(v == "ready" for v in states.values())
        return JSONResponse({"status": "ok" if ok else "unavailable", "models": states}, 200 if ok else 503)

    @app.get("/metrics", **document(None, text="text/plain"))
    @guarded
    async def prometheus():
        return Response(metrics.render() + Metrics.engine_lines(await backend.stats()), media_type=CONTENT_TYPE_LATEST)

    @app.get("/ping", **document(None, empty=True, unavailable=True))
    @guarded
    async def ping():
        states = await backend.health()
        return Response(status_code=200 if all(v == "ready" for v in states.values()) else 503)

    @app.post("/invocations", **document(P.InvocationChat, R.ChatCompletion, R.ChatCompletionChunk,
                                          either=(P.InvocationCompletion, R.TextCompletion, R.TextCompletionChunk)))
    @guarded
    async def invocations(request: Request):
        """Container contract: a chat body (has `messages`) or a completion body; `model` is optional."""
        return await handle((await parsed(request, None))[1], request, default_model=backend.names[0])

    app.add_middleware(_Guard, keys=keys, max_body=int(s["max_body_bytes"]), metrics=metrics)
    install(app, int(s["max_tokens_limit"]))
    return app


def _text_of(tokens) -> str:
    """The text of scored token-id prompt (for echo): its tokens' bytes, decoded."""
    return b"".join(bytes(t.bytes) for t in tokens or []).decode("utf-8", "replace")
