"""lifecycle.sse: one parser for the OpenAI streaming API, held to the SSE rules on awkward input."""

import asyncio
import json

import pytest

from lifecycle.sse import SSEDecoder, aiter_events, iter_events, parse_events

pytestmark = pytest.mark.unit

A, B = {"choices": [{"delta": {"content": "4"}}]}, {"choices": [{"text": "é中\u2028"}], "usage": None}


def _wire(*events, end="\n") -> str:
    """Each event as one data line, then one split over two data lines ({"m": 2}), then [DONE]."""
    lines = [f"data: {json.dumps(e, ensure_ascii=False)}{end}{end}" for e in events]
    return "".join(lines) + f'data: {{"m":{end}data: 2}}{end}{end}data: [DONE]{end}{end}'


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_every_line_ending_and_every_split_point_gives_the_same_events(end):
    """Bytes cut at every offset: inside 'data:', between CR and LF, inside a multi-byte UTF-8 character."""
    raw, want = _wire(A, B, end=end).encode(), [A, B, {"m": 2}]
    assert parse_events(raw) == want
    for cut in range(1, len(raw)):
        assert list(iter_events([raw[:cut], raw[cut:]])) == want, cut
    assert list(iter_events(raw[i:i + 1] for i in range(len(raw)))) == want


def test_comments_other_fields_and_multi_line_data():
    body = (": keep-alive\n\n"
            "event: message\nid: 7\nretry: 100\n"
            'data: {"choices":\ndata:  [1,\ndata:2]}\n\n'  # lines join with \n; only one space is dropped
            "data:{\"x\": 1}\n\n"  # no space after the colon
            "data\n\n"  # a field with no value: an empty event, nothing to parse
            "\n\n"
            "data: [DONE]\n\n")
    assert parse_events(body) == [{"choices": [1, 2]}, {"x": 1}]


def test_done_ends_the_stream_and_later_input_is_not_read():
    pulled = []

    def chunks():
        for c in ("data: {\"n\": 1}\n\ndata: [DONE]\n\n", "data: {\"n\": 2}\n\n", "data: not json\n\n"):
            pulled.append(c)
            yield c

    assert list(iter_events(chunks())) == [{"n": 1}] and len(pulled) == 1
    d = SSEDecoder()
    assert d.feed("data: [DONE]\n\n") == [] and d.done and d.feed('data: {"n": 3}\n\n') == []


def test_an_event_cut_off_before_its_blank_line_is_dropped_and_bom_is_skipped():
    assert parse_events('\ufeffdata: {"a": 1}\n\ndata: {"b": 2}\n') == [{"a": 1}]
    assert parse_events(b'\xef\xbb\xbfdata: {"a": 1}\n\n') == [{"a": 1}]


def test_data_that_is_not_json_names_itself():
    with pytest.raises(ValueError, match="not JSON: '<html>'"):
        parse_events("data: <html>\n\n")


def test_async_stream():
    async def chunks():
        raw = _wire(A, B, end="\r\n").encode()
        for i in range(0, len(raw), 5):
            yield raw[i:i + 5]

    async def collect():
        return [e async for e in aiter_events(chunks())]

    assert asyncio.run(collect()) == [A, B, {"m": 2}]
