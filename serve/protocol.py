"""OpenAI wire format, request side: safe JSON parsing, request models with documented limits, error bodies,
and the mapping of a request onto the engine's SamplingParams. Responses are built in serve/responses.py.

Requests are parsed here and nowhere else, so every malformed body becomes the same 4xx shape:
`{"error": {"message", "type", "param", "code"}}`. The request models are also the OpenAPI request schemas
(serve/openapi.py), so what the document promises is exactly what is validated.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError

from lifecycle.engine import SamplingParams

# Documented limits (README "The OpenAI API"); the body size limit is a server setting (max_body_bytes).
MAX_STOP = 4  # stop sequences per request, as OpenAI
MAX_STOP_CHARS = 256  # characters per stop sequence
MAX_PROMPTS = 64  # prompts in one /v1/completions request
MAX_MESSAGES = 512  # messages in one chat
MAX_N = 16  # choices per prompt
MAX_LOGPROBS = 20  # top alternatives per token
MAX_JSON_DEPTH = 64  # nesting of the request body
GREEDY_BELOW = 1e-5  # a temperature in (0, 1e-5) is greedy: dividing logits by it overflows on every engine
SEED_MODULUS = 2**32  # seeds are reduced mod 2^32 (llama.cpp's width) so every engine gets the same value
STRICT_HEADER = "x-lifecycle-strict"  # "true": a field this server would ignore is a 400 instead


class APIError(Exception):
    """An error with an HTTP status and OpenAI's error body."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}  # e.g. Retry-After on a 429

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ---- parsing ---------------------------------------------------------------------------------------------
def parse_json(raw: bytes) -> dict:
    """Request bytes -> a JSON object, or a 400. Refuses lone surrogates (they cannot be encoded as UTF-8, so no
    tokenizer or response could carry them) and nesting deeper than MAX_JSON_DEPTH."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise APIError(400, f"request body is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"request body is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object")
    _check_tree(data)
    return data


def _check_tree(data: dict) -> None:
    """Walk the parsed body without recursion: depth bound, and every string (keys too) valid Unicode text."""
    stack = [(data, 1, None)]
    while stack:
        node, depth, top = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise APIError(400, f"request body is nested more than {MAX_JSON_DEPTH} levels deep", param=top)
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            where = top or (key if isinstance(key, str) else None)
            for s in (key, value):
                if isinstance(s, str):
                    try:
                        s.encode("utf-8")
                    except UnicodeEncodeError:
                        raise APIError(400, "strings must be valid Unicode text: found a lone UTF-16 surrogate "
                                            "escape (\\ud800-\\udfff)", param=_safe(where)) from None
            if isinstance(value, (dict, list)):
                stack.append((value, depth + 1, where))


def _safe(param: str | None) -> str | None:
    return param.encode("utf-8", "replace").decode() if param else param


# ---- request models --------------------------------------------------------------------------------------
class _Strict(BaseModel):
    # strict: "5" is not an int and 1.0 is not a bool; fields outside the model are kept in `model_extra` so a
    # strict-mode request can be refused and a plain one told, in a header, what was ignored
    model_config = ConfigDict(strict=True, extra="allow")


StopString = Annotated[str, StringConstraints(max_length=MAX_STOP_CHARS)]


class ContentPart(_Strict):
    type: Literal["text"] = Field(description="only text parts are supported")
    text: str


class Message(_Strict):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Union[str, list[ContentPart], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class StreamOptions(_Strict):
    include_usage: bool = False


class JSONSchemaFormat(_Strict):
    name: str = Field(max_length=64)
    schema_: Optional[dict] = Field(None, alias="schema")
    description: Optional[str] = None
    strict: Optional[bool] = None


class TextFormat(_Strict):
    type: Literal["text"]


class JSONObjectFormat(_Strict):
    type: Literal["json_object"]


class JSONSchemaResponseFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = Annotated[Union[TextFormat, JSONObjectFormat, JSONSchemaResponseFormat], Field(discriminator="type")]


def _engine_format(fmt) -> dict | None:
    """The response_format as the engine takes it (None: free text)."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_schema":
        js = fmt.json_schema
        return {"type": "json_schema", "json_schema": {"name": js.name, "schema": js.schema_ or {},
                                                       "strict": bool(js.strict)}}
    return {"type": "json_object"}


def _integral(v):
    """JSON Schema counts 5.0 as an integer; so do we (strict mode still refuses "5" and true)."""
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**64 else v


def Int(**constraints):
    return Annotated[int, Field(**constraints), BeforeValidator(_integral)]


class _Sampling(_Strict):
    model: str = Field(min_length=1, max_length=256)
    max_tokens: Optional[Int(ge=0, le=2**31 - 1)] = None
    max_completion_tokens: Optional[Int(ge=1, le=2**31 - 1)] = None
    temperature: Optional[float] = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: Optional[float] = Field(None, gt=0, le=1, allow_inf_nan=False)
    stop: Union[StopString, Annotated[list[StopString], Field(max_length=MAX_STOP)], None] = None
    seed: Optional[Int(ge=-(2**63), le=2**63 - 1)] = None
    n: Int(ge=1, le=MAX_N) = 1
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    response_format: Optional[ResponseFormat] = None

    def _common(self, default_max_tokens: int, echo: bool = False) -> dict:
        if self.max_completion_tokens is not None:
            max_tokens = self.max_completion_tokens
        else:
            max_tokens = default_max_tokens if self.max_tokens is None else self.max_tokens
        if max_tokens == 0 and not echo:
            raise APIError(400, "max_tokens must be >= 1 (0 is allowed only with echo)", param="max_tokens")
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        temperature = 1.0 if self.temperature is None else self.temperature
        return dict(max_tokens=max_tokens, stop=[s for s in stop if s],  # an empty stop string matches nothing
                    temperature=0.0 if temperature < GREEDY_BELOW else temperature,
                    top_p=1.0 if self.top_p is None else self.top_p,
                    seed=None if self.seed is None else self.seed % SEED_MODULUS,
                    response_format=_engine_format(self.response_format))

    def ignored(self) -> list[str]:
        """Fields this server accepts but does not act on (null values do not count)."""
        found = [k for k, v in (self.model_extra or {}).items() if v is not None]
        if getattr(self, "top_logprobs", None) is not None and not getattr(self, "logprobs", None):
            found.append("top_logprobs")  # without logprobs: true there is nothing to add alternatives to
        for obj, prefix in self._nested():
            found += [f"{prefix}.{k}" for k, v in (obj.model_extra or {}).items() if v is not None]
        return found

    def _nested(self):
        for name in ("stream_options", "response_format"):
            if getattr(self, name) is not None:
                yield getattr(self, name), name


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    logprobs: Optional[bool] = None
    top_logprobs: Optional[Int(ge=0, le=MAX_LOGPROBS)] = None

    def prompts(self) -> list:
        return [[{"role": m.role, "content": m.text()} for m in self.messages]]

    def sampling(self, default_max_tokens: int) -> SamplingParams:
        return SamplingParams(**self._common(default_max_tokens),
                              logprobs=(self.top_logprobs or 0) if self.logprobs else None)

    def _nested(self):
        yield from super()._nested()
        for i, m in enumerate(self.messages):
            yield m, f"messages[{i}]"


TokenIds = Annotated[list[Int(ge=0, le=2**31 - 1)], Field(min_length=1)]


class CompletionRequest(_Sampling):
    prompt: Union[str, Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)], TokenIds,
                  Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]]
    echo: bool = False
    logprobs: Optional[Int(ge=0, le=MAX_LOGPROBS)] = None

    def prompts(self) -> list:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise APIError(400, "prompt must not be an empty list", param="prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # one prompt given as token ids
        return list(p)

    def sampling(self, default_max_tokens: int) -> SamplingParams:
        # echo scores the prompt too; with max_tokens 0 nothing is generated (how log-likelihood clients ask)
        common = self._common(default_max_tokens, echo=self.echo)
        # (echoing token ids also needs them: their text comes from the scored tokens)
        ids = not isinstance(self.prompt, str) and bool(self.prompt) and not isinstance(self.prompt[0], str)
        wanted = self.logprobs is not None or common["max_tokens"] == 0 or ids
        prompt_lp = (self.logprobs or 0) if self.echo and wanted else None
        return SamplingParams(**common, logprobs=self.logprobs, prompt_logprobs=prompt_lp)


class InvocationChat(ChatRequest):
    """The container contract's chat body: `model` defaults to the first served model."""
    model: Optional[str] = Field(None, max_length=256)


class InvocationCompletion(CompletionRequest):
    """The container contract's completion body: `model` defaults to the first served model."""
    model: Optional[str] = Field(None, max_length=256)


def validate(cls: type[_Sampling], data: dict) -> _Sampling:
    """A JSON object -> a validated request, or a 400 naming the first bad field."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(x) for x in err["loc"] if not isinstance(x, int)]
        param = _safe(loc[0]) if loc else None
        missing = err["type"] == "missing"
        msg = f"'{param}' is a required property" if missing else f"{'.'.join(loc) or 'body'}: {err['msg']}"
        raise APIError(400, _safe(msg), param=param,
                       code="missing_required_parameter" if missing else "invalid_type") from None


def check_ignored(req: _Sampling, strict: bool) -> list[str]:
    """The ignored fields; in strict mode a 400 naming them."""
    ignored = req.ignored()
    if ignored and strict:
        names = ", ".join(_safe(n) for n in ignored[:8])
        raise APIError(400, f"this server does not implement: {names} (sent with {STRICT_HEADER}: true)",
                       param=_safe(ignored[0]), code="unsupported_parameter")
    return ignored


from serve.responses import usage  # noqa: E402,F401  (serve/batch.py builds its usage with it)
