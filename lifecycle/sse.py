"""Server-sent events of the OpenAI streaming API, parsed the same way by every client in the project.

    for event in iter_events(resp.iter_bytes()):          # httpx; requests: r.iter_content(chunk_size=None)
        print(event["choices"][0])
    async for event in aiter_events(resp.content.iter_any()):   # aiohttp
        ...
    events = parse_events(body)                           # a whole response body, str or bytes

Input is raw chunks (bytes or str) split anywhere, even inside a line, a CRLF or a UTF-8 character; pass
the transport's raw byte iterator, not its line iterator (iter_lines strips the line ends that delimit
events). The rules are the SSE spec's (WHATWG HTML, "Parsing an event stream") as far as these streams use
them: lines end in LF, CRLF or CR; a line starting with ':' is a comment (keep-alive); `data:` lines join
with '\\n' until a blank line dispatches the event; one space after the colon is dropped; `event:`, `id:`
and `retry:` are ignored; an event the stream ends before its blank line is dropped, as the spec and the
OpenAI SDK do. Each event's data is JSON (a ValueError otherwise), except `[DONE]`, which ends the stream.
Stdlib only: the Locust users and the benchmark client import it without a web framework.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any, AsyncIterable, AsyncIterator, Iterable, Iterator

DONE = "[DONE]"
_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEDecoder:
    """Incremental parser: `feed(chunk)` returns the JSON events completed by that chunk; `done` turns True
    at `data: [DONE]`, after which input is ignored."""

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._buf = ""
        self._data: list[str] = []
        self._started = False
        self._skip_lf = False  # the last chunk ended in CR: an LF opening the next one belongs to it
        self.done = False

    def feed(self, chunk: bytes | str) -> list[Any]:
        text = self._utf8.decode(chunk) if isinstance(chunk, (bytes, bytearray)) else chunk
        if not text or self.done:
            return []
        if self._skip_lf:
            self._skip_lf, text = False, text[1:] if text[0] == "\n" else text
        if not self._started and text:
            self._started, text = True, text.removeprefix("\ufeff")
        self._buf += text
        events = []
        while not self.done and (m := _LINE_END.search(self._buf)):
            line, self._buf = self._buf[:m.start()], self._buf[m.end():]
            self._skip_lf = m.group() == "\r" and not self._buf
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> Any:
        if not line:
            data, self._data = "\n".join(self._data), []
            if data == DONE:
                self.done = True
            elif data.strip():
                try:
                    return json.loads(data)
                except ValueError:
                    raise ValueError(f"server-sent event data is not JSON: {data[:200]!r}") from None
            return None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None


def iter_events(chunks: Iterable[bytes | str]) -> Iterator[Any]:
    """JSON events from a stream of raw chunks, up to `[DONE]` (the rest is not read)."""
    decoder = SSEDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
        if decoder.done:
            return


async def aiter_events(chunks: AsyncIterable[bytes | str]) -> AsyncIterator[Any]:
    """`iter_events` over an async stream of raw chunks."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
        if decoder.done:
            return


def parse_events(body: bytes | str) -> list[Any]:
    """Every JSON event of a complete response body."""
    return list(iter_events([body]))
