"""OpenAI wire format, response side: the response models (also the OpenAPI response schemas) and their builders,
including token logprobs in the chat and the legacy completions shapes, and the SSE chunks of a stream.

Responses are built through these models, so the OpenAPI document describes exactly what is sent.
"""

from __future__ import annotations

import codecs
import json
import time
import uuid
from typing import Any, Literal, Optional

from pydantic import BaseModel

from lifecycle.engine import Completion, TokenLogprob


# ---- models ----------------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: Optional[list[int]] = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: Optional[list[ChatTokenLogprob]] = None
    refusal: Optional[list[ChatTokenLogprob]] = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[Optional[float]]
    top_logprobs: Optional[list[Optional[dict[str, float]]]] = None
    text_offset: list[int]


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: Optional[str] = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    logprobs: Optional[ChatLogprobs] = None
    finish_reason: Optional[str] = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class TextChoice(BaseModel):
    index: int
    text: str
    logprobs: Optional[CompletionLogprobs] = None
    finish_reason: Optional[str] = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: Optional[ChatLogprobs] = None
    finish_reason: Optional[str] = None


class ChatCompletionChunk(BaseModel):
    """One `data:` event of a streamed chat completion (text/event-stream)."""
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Optional[Usage] = None


class TextCompletionChunk(BaseModel):
    """One `data:` event of a streamed text completion (text/event-stream)."""
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Optional[Usage] = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lifecycle"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    models: dict[str, str]


# ---- logprobs --------------------------------------------------------------------------------------------
def _top(t: TokenLogprob) -> TopLogprob:
    return TopLogprob(token=t.token, logprob=t.logprob if t.logprob is not None else 0.0, bytes=t.bytes)


def chat_logprobs(tokens: list[TokenLogprob] | None) -> ChatLogprobs | None:
    if tokens is None:
        return None
    return ChatLogprobs(content=[ChatTokenLogprob(token=t.token, logprob=t.logprob if t.logprob is not None else 0.0,
                                                  bytes=t.bytes, top_logprobs=[_top(a) for a in t.top])
                                 for t in tokens])


class _Offsets:
    """Character offsets of successive tokens in the text they decode to, from their bytes (a token that ends
    inside a multi-byte character is placed where that character starts)."""

    def __init__(self, start: int = 0):
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.chars = start

    def next(self, data: list[int]) -> int:
        at = self.chars
        self.chars += len(self.decoder.decode(bytes(data)))
        return at


def completion_logprobs(tokens: list[TokenLogprob], start: int = 0, offsets: _Offsets | None = None,
                        text: str | None = None) -> tuple[CompletionLogprobs, _Offsets]:
    """Tokens -> the legacy shape (tokens, token_logprobs, top_logprobs as {token: logprob}, text_offset).

    With `text` (an echoed prompt), offsets are found by matching each token's bytes against the text: a token
    the text does not contain there (a BOS, a SentencePiece dummy-prefix space) gets zero width, so offsets
    index the text the client sent, as log-likelihood clients that split context and continuation expect."""
    offsets = offsets or _Offsets(start)
    data, pos = (text.encode("utf-8"), 0) if text is not None else (b"", 0)
    out = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    for t in tokens:
        out.tokens.append(t.token)
        out.token_logprobs.append(t.logprob)
        out.top_logprobs.append({a.token: a.logprob for a in t.top} if t.logprob is not None else None)
        if text is None:
            out.text_offset.append(offsets.next(t.bytes))
            continue
        b = bytes(t.bytes)
        take = 0
        if b and data.startswith(b, pos):
            take = len(b)
        elif len(b) > 1 and b[:1] == b" " and data.startswith(b[1:], pos):
            take = len(b) - 1
        out.text_offset.append(offsets.next(list(data[pos:pos + take])))
        pos += take
    return out, offsets


def _join(a: CompletionLogprobs, b: CompletionLogprobs) -> CompletionLogprobs:
    return CompletionLogprobs(tokens=a.tokens + b.tokens, token_logprobs=a.token_logprobs + b.token_logprobs,
                              top_logprobs=(a.top_logprobs or []) + (b.top_logprobs or []),
                              text_offset=a.text_offset + b.text_offset)


# ---- builders --------------------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens).model_dump()


def chat_response(model: str, outs: list[Completion], prompt_tokens: int, logprobs: bool = False) -> dict:
    return ChatCompletion(
        id=new_id("chatcmpl"), created=int(time.time()), model=model,
        choices=[ChatChoice(index=i, message=ChatMessage(content=c.text),
                            logprobs=chat_logprobs(c.logprobs) if logprobs else None, finish_reason=c.finish_reason)
                 for i, c in enumerate(outs)],
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=sum(c.completion_tokens for c in outs),
                    total_tokens=prompt_tokens + sum(c.completion_tokens for c in outs)),
    ).model_dump(mode="json")


def completion_response(model: str, outs: list[Completion], prompt_tokens: int, echoed: list[str] | None = None,
                        logprobs: bool = False) -> dict:
    """`echoed`: the prompt text of each choice when the request asked for echo (its logprobs come first)."""
    choices = []
    for i, c in enumerate(outs):
        head = echoed[i] if echoed else ""
        lp = None
        if logprobs:
            if echoed and c.prompt_logprobs is not None:
                lp, offsets = completion_logprobs(c.prompt_logprobs, text=head)
                offsets.chars = len(head)  # the generated text starts after the echoed prompt, as sent
                lp = _join(lp, completion_logprobs(c.logprobs or [], offsets=offsets)[0])
            else:
                lp = completion_logprobs(c.logprobs or [], start=len(head))[0]
        choices.append(TextChoice(index=i, text=head + c.text, logprobs=lp, finish_reason=c.finish_reason))
    done = sum(c.completion_tokens for c in outs)
    return TextCompletion(id=new_id("cmpl"), created=int(time.time()), model=model, choices=choices,
                          usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=done,
                                      total_tokens=prompt_tokens + done)).model_dump(mode="json")


class ChunkWriter:
    """Builds the SSE lines of one streamed response (chat or text completion), for any number of choices."""

    def __init__(self, model: str, chat: bool):
        self.model, self.chat = model, chat
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = int(time.time())
        self.offsets: dict[int, _Offsets] = {}

    def _event(self, choices: list, usage_: dict | None = None) -> str:
        cls = ChatCompletionChunk if self.chat else TextCompletionChunk
        chunk = cls(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage_)
        body: dict[str, Any] = chunk.model_dump(mode="json", exclude_none=False)
        if usage_ is None:
            body.pop("usage")
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    def start(self, index: int = 0) -> str:
        return self._event([ChatChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))]) if self.chat else ""

    def text(self, text: str, finish_reason: str | None = None, index: int = 0,
             logprobs: list[TokenLogprob] | None = None, start: int = 0) -> str:
        """`start`: where this choice's text begins in its whole text (the echoed prompt's length), for offsets."""
        if self.chat:
            delta = ChatDelta(content=text) if text else ChatDelta()
            return self._event([ChatChunkChoice(index=index, delta=delta, logprobs=chat_logprobs(logprobs),
                                                finish_reason=finish_reason)])
        lp = None
        if logprobs is not None:
            lp, self.offsets[index] = completion_logprobs(logprobs, start, self.offsets.get(index))
        return self._event([TextChoice(index=index, text=text, logprobs=lp, finish_reason=finish_reason)])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> str:
        return self._event([], usage(prompt_tokens, completion_tokens))

    @staticmethod
    def error(body: dict) -> str:
        return f"data: {json.dumps(body)}\n\n"

    DONE = "data: [DONE]\n\n"


def models_list(names: list[str], created: int) -> dict:
    return ModelList(data=[ModelCard(id=n, created=created) for n in names]).model_dump(mode="json")


def model_card(name: str, created: int) -> dict:
    return ModelCard(id=name, created=created).model_dump(mode="json")

