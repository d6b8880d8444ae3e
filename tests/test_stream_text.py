"""Streamed text is exactly the text of decoding all the generated ids at once (`lifecycle.engine.detokenize_stream`).

Property-style checks with seeded random cases, over real tokenizer kinds: the built-in SentencePiece one
(byte fallback: an incomplete character decodes to one U+FFFD per byte token, and a later invalid byte
turns a whole run of byte tokens, ASCII ones included, into U+FFFDs), Qwen2's and Llama-3's byte-level BPE
(one U+FFFD per incomplete sequence) and Mistral's / Phi-3's SentencePiece (tests/families.py). Ids go
through `detokenize_stream` one at a time from a fake token source. Then one end-to-end check per engine
(hf, gguf, onnx of the built-in model): `stream` == `generate` under seeded high-temperature sampling, where
random byte tokens (multi-byte and invalid UTF-8) appear.
"""

import importlib.util
import random

import pytest

from lifecycle.engine import SamplingParams, byte_fallback_ids, detokenize_stream, first_stop

pytestmark = pytest.mark.integration

TEXTS = ["你好，世界！今天天气很好。", "Ça coûte 12 € à Zürich, naïve façade — déjà vu.", "🦙 llama 👨‍👩‍👧 family 🇫🇷 ok 👍🏽!",
         "数学：12+34=46 ✓\nΕλληνικά и русский", "Hello, world! 2+3=5\n\n  indented ... done?", "é", "🦙", "中"]
POOL = list("abc xyz 12+=,.!?'\n你好世界中文字符éèçñüßØ€£—…ä") + ["🦙", "😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "  ", "\n\n"]
FAMILIES = ["qwen2", "llama3", "mistral", "phi3"]


@pytest.fixture(scope="module", params=["builtin"] + FAMILIES)
def tok(request, base_artifact):
    from transformers import AutoTokenizer

    if request.param == "builtin":
        return AutoTokenizer.from_pretrained(base_artifact.path)
    return AutoTokenizer.from_pretrained(request.getfixturevalue("family_checkpoints")(request.param))


def _decode(tok):
    return lambda ids: tok.decode(ids, skip_special_tokens=True)


_BYTES: dict = {}


def _byte_ids(tok) -> frozenset:
    if id(tok) not in _BYTES:  # a pass over the vocabulary: 150k entries for Qwen2
        _BYTES[id(tok)] = byte_fallback_ids(tok)
    return _BYTES[id(tok)]


def _stream(tok, ids, stop=(), eos=()):
    """Feed ids one at a time; return (events, ids pulled from the source)."""
    pulled = []

    def source():
        for t in ids:
            pulled.append(t)
            yield t

    params = SamplingParams(max_tokens=max(1, len(ids)), stop=list(stop))
    return list(detokenize_stream(source(), _decode(tok), params, eos, _byte_ids(tok))), pulled


def _random_texts(seed, n=150):
    rng = random.Random(seed)
    return TEXTS + ["".join(rng.choice(POOL) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def test_stream_equals_decode_and_is_prompt(tok):
    """Joined events == decode(all ids); no event shows a U+FFFD the full text lacks; and text is not held
    longer than needed: after each id that ends a complete character (not a byte piece), everything so far is out."""
    decode, byte_ids = _decode(tok), _byte_ids(tok)
    for text in _random_texts(0):
        ids = tok(text, add_special_tokens=False).input_ids
        full = decode(ids)
        events, _ = _stream(tok, ids)
        assert "".join(e.text for e in events) == full, (text, ids)
        assert events[-1].finish_reason == "length" and events[-1].completion_tokens == len(ids)
        if "\ufffd" not in full:
            assert not any("\ufffd" in e.text for e in events), (text, [e.text for e in events])
        for k in range(1, len(ids)):
            so_far = decode(ids[:k])
            if not so_far.endswith("\ufffd") and ids[k - 1] not in byte_ids:
                assert "".join(e.text for e in events if e.completion_tokens <= k) == so_far, (text, k)


def test_stream_random_ids_with_invalid_utf8(tok):
    """Arbitrary ids, half of them byte pieces where the vocabulary has them: invalid and incomplete UTF-8
    (decoded to U+FFFD, sometimes retroactively) still streams to exactly the full decode."""
    rng = random.Random(1)
    special = set(tok.all_special_ids)
    byte_ids = sorted(_byte_ids(tok)) or list(range(256))  # byte-level BPE: ids 0-255 are single bytes
    normal = [i for i in range(min(len(tok), 5000)) if i not in special]
    for _ in range(300):
        ids = [rng.choice(byte_ids if rng.random() < 0.5 else normal) for _ in range(rng.randint(1, 16))]
        events, _ = _stream(tok, ids)
        assert "".join(e.text for e in events) == _decode(tok)(ids), ids


def test_stop_strings_around_multibyte_characters(tok):
    """A stop string that holds or borders a multi-byte character cuts the text exactly where decode+find
    would, and the ids after it are never pulled from the source."""
    rng = random.Random(2)
    decode = _decode(tok)
    checked = 0
    for text in _random_texts(3, n=100):
        ids = tok(text, add_special_tokens=False).input_ids
        full = decode(ids)
        wide = [i for i, ch in enumerate(full) if ord(ch) > 127]
        if not wide:
            continue
        i = rng.choice(wide)
        start = max(0, i - rng.randint(0, 1))
        stop = full[start: i + 1 + rng.randint(0, 1)]
        events, pulled = _stream(tok, ids, stop=[stop, "never-in-text"])
        cut = full.find(stop)
        assert "".join(e.text for e in events) == full[:cut], (text, stop)
        assert events[-1].finish_reason == "stop"
        assert first_stop(decode(pulled), [stop]) is not None and first_stop(decode(pulled[:-1]), [stop]) is None
        checked += 1
    assert checked > 50
    ids = tok("数学：12+34=46", add_special_tokens=False).input_ids  # a stop that never comes: all of it, "length"
    events, _ = _stream(tok, ids, stop=["46!", "学数"])
    assert "".join(e.text for e in events) == decode(ids) and events[-1].finish_reason == "length"


def test_eos_ends_the_stream_mid_character(tok):
    """An EOS id stops at once, even in the middle of a character: what was held back is flushed."""
    ids = tok("好🦙", add_special_tokens=False).input_ids
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.all_special_ids[0]
    for k in range(1, len(ids) + 1):
        events, pulled = _stream(tok, ids[:k] + [eos, *ids], eos=[eos])
        assert pulled == ids[:k] + [eos]
        assert "".join(e.text for e in events) == _decode(tok)(ids[:k] + [eos])
        assert events[-1].finish_reason == "stop" and events[-1].completion_tokens == k + 1


# ---------------------------------------------------------------------------------------------- engines

PROMPTS = ["你好，", "Ça va? ", "🦙 ", "12+34="]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, base_artifact, torch_one_thread):
    from quantize.driver import quantize

    root, cache, out = tmp_path_factory.mktemp("stream-text"), {}, {}
    for name, mods in (("gguf-q8_0", ("llama_cpp", "conversion")), ("onnx", ("onnxruntime_genai", "onnx"))):
        if all(importlib.util.find_spec(m) for m in mods):
            out[name] = quantize(base_artifact.path, name, root / name, ["eval_items=0", "parity_prompts=1"],
                                 parent_cache=cache)
    return out


@pytest.fixture(scope="module", params=["hf", "gguf-q8_0", "onnx"])
def engine(request, hf_engine, artifacts):
    from lifecycle.engine import load_engine

    if request.param == "hf":
        yield hf_engine
        return
    if request.param not in artifacts:
        pytest.skip(f"{request.param}: runtime not installed")
    e = load_engine(artifacts[request.param], threads=1)
    yield e
    e.close()


def test_engine_stream_equals_generate(engine):
    """Seeded sampling at temperature 8 makes the tiny model emit random byte tokens: stream == generate
    (text, finish reason, token count), with and without stop strings that hold multi-byte characters."""
    tok = engine.tok
    byte_ids, wide = byte_fallback_ids(tok), 0
    for seed in range(6):
        for prompt in PROMPTS:
            params = SamplingParams(max_tokens=20, temperature=8.0, seed=seed, stop=["é", "中"] if seed % 2 else [])
            [done] = engine.generate([prompt], params)
            events = list(engine.stream(prompt, params))
            assert "".join(e.text for e in events) == done.text, (prompt, seed)
            assert (events[-1].finish_reason, events[-1].completion_tokens) == (done.finish_reason,
                                                                               done.completion_tokens)
            if hasattr(engine, "_tokens"):  # token engines: also equal to decoding the sampled ids at once
                ids = list(engine._tokens(engine._encode(prompt), params))
                full = tok.decode(ids, skip_special_tokens=True)
                cut = first_stop(full, params.stop)
                assert done.text == (full if cut is None else full[:cut])
                wide += sum(t in byte_ids and tok.convert_ids_to_tokens(t) >= "<0x80>" for t in ids)
            else:
                wide += any(ord(c) > 127 for c in done.text)
    assert wide >= 5  # multi-byte / invalid UTF-8 pieces really were generated
