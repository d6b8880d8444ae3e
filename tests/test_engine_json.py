"""response_format: JSON output that parses and validates, by constrained decoding.

torch engines (hf, int8, gptq): llguidance; GGUF: llama.cpp's grammar sampler (llguidance for schema keywords the
GBNF converter drops); ONNX: refused with a UserError that names the engine. Checked on the trained tiny
model and on a random-weight Qwen2-family checkpoint (a model that has never seen JSON).
"""

import importlib.util
import json

import jsonschema
import pytest

from engine_kinds import available, engine_of
from lifecycle.engine import SamplingParams as SP
from lifecycle.errors import UserError

pytestmark = [pytest.mark.integration, pytest.mark.skipif(importlib.util.find_spec("llguidance") is None,
                                                          reason="llguidance not installed (pip install llguidance)")]
# every value bounded, so even a random model finishes: enums, booleans, short strings, small arrays
BOUNDED = {"type": "object", "additionalProperties": False, "required": ["name", "ok", "tag", "xs"],
           "properties": {"name": {"type": "string", "maxLength": 6}, "ok": {"type": "boolean"},
                          "tag": {"enum": ["add", "sub"]},
                          "xs": {"type": "array", "maxItems": 2, "items": {"enum": [1, 2, 3]}}}}
RANGED = {"type": "object", "additionalProperties": False, "required": ["n"],
          "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}}}  # llama-cpp-python's GBNF drops these


def _rf(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


def _check(out, schema: dict) -> None:
    assert out.finish_reason == "stop", out
    jsonschema.validate(json.loads(out.text), schema)


@pytest.mark.parametrize("kind", ["hf", "int8", "gptq", "gguf-f16"])
def test_json_schema_and_json_object_validate(kind, tmp_path_factory, base_artifact, torch_one_thread):
    if not available(kind):
        pytest.skip(f"{kind} runtime not installed")
    engine = engine_of(kind, tmp_path_factory.getbasetemp() / "engine-kinds", base_artifact)
    prompts = ["12+34=", [{"role": "user", "content": "Give me JSON."}]]
    for schema in (BOUNDED, RANGED):
        for out in engine.generate(prompts, SP(max_tokens=120, response_format=_rf(schema))):
            _check(out, schema)
    sampled = SP(max_tokens=120, temperature=1.0, top_p=0.9, seed=7, response_format=_rf(BOUNDED), logprobs=1)
    [out] = engine.generate(["Hello"], sampled)
    _check(out, BOUNDED)
    streamed = list(engine.stream("Hello", sampled))
    assert "".join(e.text for e in streamed) == out.text  # same seed, same constrained sample
    # json_object lets strings run on; this chat is one the tiny model closes its JSON for
    chat = [{"role": "user", "content": "What is 2+3? Answer in JSON."}]
    [obj] = engine.generate([chat], SP(max_tokens=60, response_format={"type": "json_object"}))
    assert obj.finish_reason == "stop" and isinstance(json.loads(obj.text), dict)
    [cut] = engine.generate(["12+34="], SP(max_tokens=6, response_format={"type": "json_object"}))
    assert cut.text.startswith("{") and cut.finish_reason == "length"  # out of tokens: truncated, as OpenAI does
    [plain] = engine.generate(["12+34="], SP(max_tokens=4, response_format={"type": "text"}))
    assert plain.text == engine.generate(["12+34="], SP(max_tokens=4))[0].text


def test_random_weight_model_still_gives_valid_json(family_checkpoints, torch_one_thread):
    from lifecycle.engine import load_engine

    engine = load_engine(str(family_checkpoints("qwen2")))
    try:
        outs = engine.generate([[{"role": "user", "content": "hi"}], "x"], SP(max_tokens=80, response_format=_rf(BOUNDED)))
        for out in outs:
            _check(out, BOUNDED)
        [out] = engine.generate(["x"], SP(max_tokens=40, response_format=_rf(RANGED)))
        _check(out, RANGED)
    finally:
        engine.close()


@pytest.mark.skipif(not available("onnx"), reason="onnxruntime-genai not installed")
def test_onnx_refuses_response_format_naming_the_engine(tmp_path_factory, base_artifact, torch_one_thread):
    engine = engine_of("onnx", tmp_path_factory.getbasetemp() / "engine-kinds", base_artifact)
    with pytest.raises(UserError, match="response_format is not supported by the onnx engine"):
        engine.generate(["1+1="], SP(max_tokens=4, response_format={"type": "json_object"}))
    with pytest.raises(UserError, match="not supported by the onnx engine"):
        engine.stream("1+1=", SP(max_tokens=4, response_format=_rf(BOUNDED)))
    assert engine.generate(["1+1="], SP(max_tokens=2, response_format={"type": "text"}))[0].text


def test_bad_response_formats_are_user_errors(hf_engine):
    for bad in ({"type": "xml"}, {"type": "json_schema"}, {"type": "json_schema", "json_schema": {"schema": 3}},
                "json", {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}):
        with pytest.raises(UserError, match="response_format"):
            hf_engine.generate(["1+1="], SP(max_tokens=4, response_format=bad))
