"""OpenAI wire format: request models (strict types), error bodies, response and SSE chunk builders.

Requests are parsed here and nowhere else, so every malformed body becomes the same 4xx shape:
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lifecycle.engine import Completion, SamplingParams


class APIError(Exception):
    """An error with an HTTP status and OpenAI's error body."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}  # e.g. Retry-After on a 429

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    # strict: "5" is not an int and 1.0 is not a bool; unknown fields (user, logit_bias...) are ignored
    model_config = ConfigDict(strict=True, extra="ignore")


class Message(_Strict):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Union[str, list[dict], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: only text is supported
            parts = []
            for p in self.content:
                if p.get("type") != "text" or not isinstance(p.get("text"), str):
                    raise APIError(400, "only text content parts are supported", param="messages")
                parts.append(p["text"])
            return "".join(parts)
        return self.content or ""


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: Optional[str] = None
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None

    def sampling(self, default_max_tokens: int) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > 4:
            raise APIError(400, "at most 4 stop sequences are allowed", param="stop")
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p, stop=stop, seed=self.seed)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)

    def prompts(self) -> list:
        return [[{"role": m.role, "content": m.text()} for m in self.messages]]


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str]]
    echo: bool = False

    def prompts(self) -> list:
        if isinstance(self.prompt, list):
            if not self.prompt:
                raise APIError(400, "prompt must not be an empty list", param="prompt")
            return list(self.prompt)
        return [self.prompt]


def parse_json(raw: bytes) -> dict:
    """Request bytes -> a JSON object, or a 400."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object")
    return data


def validate(cls: type[_Sampling], data: dict) -> _Sampling:
    """A JSON object -> a validated request, or a 400 naming the first bad field."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(x) for x in err["loc"] if not isinstance(x, int)]
        param = loc[0] if loc else None
        missing = err["type"] == "missing"
        msg = f"'{param}' is a required property" if missing else f"{'.'.join(loc) or 'body'}: {err['msg']}"
        raise APIError(400, msg, param=param,
                       code="missing_required_parameter" if missing else "invalid_type") from None


# ---- responses -----------------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_response(model: str, outs: list[Completion], prompt_tokens: int) -> dict:
    return {
        "id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                     "logprobs": None, "finish_reason": c.finish_reason} for i, c in enumerate(outs)],
        "usage": usage(prompt_tokens, sum(c.completion_tokens for c in outs)),
    }


def completion_response(model: str, outs: list[Completion], prompt_tokens: int, echoed: list[str] | None = None) -> dict:
    return {
        "id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, "text": (echoed[i] if echoed else "") + c.text, "logprobs": None,
                     "finish_reason": c.finish_reason} for i, c in enumerate(outs)],
        "usage": usage(prompt_tokens, sum(c.completion_tokens for c in outs)),
    }


class ChunkWriter:
    """Builds the SSE lines of one streamed response (chat or text completion)."""

    def __init__(self, model: str, chat: bool):
        self.model, self.chat = model, chat
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())
        self.object = "chat.completion.chunk" if chat else "text_completion"

    def _event(self, choices: list, usage_: dict | None = None) -> str:
        body: dict[str, Any] = {"id": self.id, "object": self.object, "created": self.created,
                                "model": self.model, "choices": choices}
        if usage_ is not None:
            body["usage"] = usage_
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    def start(self) -> str:
        return self._event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}]) if self.chat else ""

    def text(self, text: str, finish_reason: str | None = None) -> str:
        if self.chat:
            delta = {"content": text} if text else {}
            return self._event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])
        return self._event([{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> str:
        return self._event([], usage(prompt_tokens, completion_tokens))

    @staticmethod
    def error(e: APIError) -> str:
        return f"data: {json.dumps(e.body())}\n\n"

    DONE = "data: [DONE]\n\n"


def models_list(names: list[str], created: int) -> dict:
    return {"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": "lifecycle"}
                                       for n in names]}
