"""The server's OpenAPI document, generated from the pydantic models that validate requests (serve/protocol.py)
and build responses (serve/responses.py), so generated clients and schema-driven fuzzers see the real contract.

Routes take the raw Request (parsing is ours: strict types, safe JSON, one error shape), so FastAPI cannot
infer their bodies; `document(...)` gives each route decorator its requestBody and responses, and `install`
adds every model named there to the document's components.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from serve.responses import ErrorResponse

_MODELS: dict[str, type[BaseModel]] = {}
_ERRORS = {400: "invalid request", 401: "missing or wrong API key", 404: "unknown model",
           413: "request body too large", 429: "queue full: retry after the Retry-After header's seconds",
           500: "server error", 503: "model unavailable or restarting", 504: "request timed out"}


def _ref(model: type[BaseModel]) -> dict:
    _MODELS[model.__name__] = model
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def document(request: type[BaseModel] | None, response: type[BaseModel] | None = None,
             chunk: type[BaseModel] | None = None, either: tuple[type[BaseModel], ...] | None = None,
             unavailable: bool = False, text: str | None = None, empty: bool = False) -> dict[str, Any]:
    """Keyword arguments for a route decorator: its request body, success response and error responses.
    `either`: (second request model, its response model, its stream chunk model) for a route that takes one of
    two bodies."""
    responses: dict[int | str, dict] = {}
    if response is not None:
        body = {"anyOf": [_ref(response), _ref(either[1])]} if either else _ref(response)
        content = {"application/json": {"schema": body}}
        if chunk is not None:
            chunks = [_ref(chunk)] + ([_ref(either[2])] if either and len(either) > 2 else [])
            content["text/event-stream"] = {"schema": {  # one schema per event, as OpenAPI 3.1 tools read it
                "type": "object", "required": ["data"],
                "description": f"with stream: true: server-sent events; each `data` is a {chunk.__name__} as "
                               "JSON (an error body if the stream fails), the last is `[DONE]`",
                "properties": {"data": {"anyOf": [
                    {"const": "[DONE]"},
                    {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": {"anyOf": chunks + [_ref(ErrorResponse)]}}]},
                    "event": {"type": "string"}, "id": {"type": "string"}}}}
            _ref(chunk)
        responses[200] = {"description": "OK", "content": content}
    elif text:
        responses[200] = {"description": "OK", "content": {text: {"schema": {"type": "string"}}}}
    elif empty:
        responses[200] = {"description": "ready"}
    codes = [401, 500]
    if request is not None:
        codes += [400, 404, 413, 429, 503, 504]
    elif response is not None and response.__name__ == "ModelCard":
        codes += [404]
    if unavailable:
        codes += [503]
    for code in sorted(set(codes)):
        if code == 503 and unavailable and response is not None:
            responses[code] = {"description": "not ready", "content": {"application/json": {"schema": _ref(response)}}}
        elif code == 503 and empty:
            responses[code] = {"description": "not ready"}
        else:
            responses[code] = {"description": _ERRORS[code], "content": {"application/json": {"schema": _ref(ErrorResponse)}}}
    kw: dict[str, Any] = {"responses": responses}
    if text or empty:
        kw["response_class"] = Response  # no JSON body: FastAPI would otherwise document one
    if request is not None:
        schema = {"anyOf": [_ref(request), _ref(either[0])]} if either else _ref(request)
        kw["openapi_extra"] = {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
    return kw


def install(app: FastAPI, max_tokens: int | None = None) -> None:
    """Build the document once, with every referenced model in components/schemas; `max_tokens`: this server's
    limit, written into the request schemas."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version="1", routes=app.routes,
                              description="OpenAI-compatible API of `lifecycle serve`.")
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for name, model in _MODELS.items():
                found = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(found.pop("$defs", {}))
                schemas[name] = found
                for field in ("max_tokens", "max_completion_tokens"):
                    spec = found.get("properties", {}).get(field)
                    if max_tokens and spec:
                        for alt in spec.get("anyOf", [spec]):
                            if alt.get("type") == "integer":
                                alt["maximum"] = max_tokens
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi
