"""Which StreamEvent carries which token's logprob (lifecycle.engine.detokenize_stream), with a toy decoder."""

import pytest

from lifecycle.engine import SamplingParams, kept_tokens
from lifecycle.engine import detokenize_stream as stream

pytestmark = pytest.mark.unit
VOCAB = {1: "x", 2: "a", 3: "b", 4: "c", 5: "\ufffd", 9: ""}  # 9 is EOS, 5 an incomplete character


def _decode(ids):
    return "".join(VOCAB[i] for i in ids)


def _run(ids, stop=(), max_tokens=16):
    entries = []

    def tokens():
        for i in ids:
            entries.append(f"lp{i}")
            yield i

    params = SamplingParams(max_tokens=max_tokens, stop=list(stop))
    events = list(stream(tokens(), _decode, params, [9], logprobs=entries))
    return events, [x for ev in events for x in ev.logprobs]


def test_every_token_once_in_order_and_eos_included():
    events, got = _run([1, 2, 4, 9])
    assert "".join(e.text for e in events) == "xac" and got == ["lp1", "lp2", "lp4", "lp9"]
    assert events[-1].finish_reason == "stop"


def test_a_stop_string_across_tokens_drops_the_tokens_it_starts_in():
    events, got = _run([1, 2, 3, 4], stop=["ab"])
    assert "".join(e.text for e in events) == "x" and got == ["lp1"]
    assert kept_tokens([1, 2, 3], _decode, 1) == 1 and kept_tokens([1, 2, 3], _decode, None) == 3


def test_held_back_text_brings_its_logprob_along():
    events, got = _run([1, 2, 4], stop=["ab"])  # "a" is held until "c" shows it is no stop
    assert [(e.text, e.logprobs) for e in events] == [("x", ["lp1"]), ("ac", ["lp2", "lp4"]), ("", [])]
    events, _ = _run([1, 5, 4])  # an incomplete character waits, and so does its token's entry
    assert [(e.text, e.logprobs) for e in events] == [("x", ["lp1"]), ("\ufffdc", ["lp5", "lp4"]), ("", [])]


def test_no_logprobs_asked_means_none_on_every_event():
    events = list(stream(iter([1, 2]), _decode, SamplingParams(max_tokens=2), [9]))
    assert all(ev.logprobs is None for ev in events)
