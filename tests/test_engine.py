"""The Engine interface on the `hf` format: generate, stream and score on the built-in model."""

import pytest

from lifecycle.engine import SamplingParams, engine_class, register_engine, registered_engines
from lifecycle.errors import UserError


@pytest.mark.unit
def test_registry_refuses_double_registration_and_unknown_formats():
    assert registered_engines()["hf"] == "lifecycle.engines.hf:HFEngine"
    with pytest.raises(ValueError, match="already registered"):
        register_engine("hf", "somewhere:Else")
    with pytest.raises(UserError, match="no engine for artifact format 'nope'"):
        engine_class("nope")


@pytest.mark.unit
def test_every_registered_engine_imports():
    for name in registered_engines():
        assert engine_class(name).__name__


@pytest.mark.integration
def test_generate_raw_greedy_adds(hf_engine):
    outs = hf_engine.generate(["12+34=", "50+7="], SamplingParams(max_tokens=4, stop=["\n"]))
    assert [o.text for o in outs] == ["46", "57"]
    assert all(o.finish_reason == "stop" for o in outs)
    assert outs[0].prompt_tokens == len(hf_engine.tok("12+34=").input_ids)
    assert 1 <= outs[0].completion_tokens <= 4


@pytest.mark.integration
def test_generate_length_finish_and_token_count(hf_engine):
    [out] = hf_engine.generate(["reverse abc = "], SamplingParams(max_tokens=2))
    assert out.finish_reason == "length" and out.completion_tokens == 2


@pytest.mark.integration
def test_generate_chat_prompt_uses_template(hf_engine):
    chat = [{"role": "user", "content": "Reverse abcd."}]
    rendered = hf_engine.apply_chat_template(chat)
    assert rendered.endswith("<|im_start|>assistant\n")
    [out] = hf_engine.generate([chat], SamplingParams(max_tokens=8))
    assert out.prompt_tokens == hf_engine.count_tokens(chat)
    assert "<|im_end|>" not in out.text


@pytest.mark.integration
def test_stream_matches_generate(hf_engine):
    params = SamplingParams(max_tokens=12)
    for prompt in ["12+34=", [{"role": "user", "content": "How long is abcde?"}]]:
        [full] = hf_engine.generate([prompt], params)
        events = list(hf_engine.stream(prompt, params))
        assert "".join(e.text for e in events) == full.text
        assert events[-1].finish_reason == full.finish_reason
        assert all(e.finish_reason is None for e in events[:-1])


@pytest.mark.integration
def test_stream_stop_string_is_not_emitted(hf_engine):
    params = SamplingParams(max_tokens=12, stop=["\n"])
    events = list(hf_engine.stream("12+34=", params))
    assert "".join(e.text for e in events) == "46"
    assert events[-1].finish_reason == "stop"


@pytest.mark.integration
def test_sampling_is_reproducible_with_seed(hf_engine):
    params = SamplingParams(max_tokens=10, temperature=1.5, top_p=0.95, seed=7)
    a = hf_engine.generate(["reverse ab = "] * 3, params)
    b = hf_engine.generate(["reverse ab = "] * 3, params)
    assert [o.text for o in a] == [o.text for o in b]


@pytest.mark.integration
def test_score_prefers_the_right_sum(hf_engine):
    right, wrong = hf_engine.score([("12+34=", "46"), ("12+34=", "47")])
    assert right.num_tokens == 2 and wrong.num_tokens == 2
    assert right.logprob > wrong.logprob
    assert right.is_greedy and not wrong.is_greedy
    assert right.logprob <= 0


@pytest.mark.integration
def test_score_is_batch_invariant(hf_engine):
    alone = hf_engine.score([("7+8=", "15")])[0]
    batched = hf_engine.score([("reverse abcdef = ", "fedcba"), ("7+8=", "15")])[1]
    assert abs(alone.logprob - batched.logprob) < 1e-4


@pytest.mark.parametrize("kwargs, message", [
    ({"max_tokens": 0}, "max_tokens"), ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p")])
@pytest.mark.unit
def test_bad_sampling_params(kwargs, message):
    with pytest.raises(UserError, match=message):
        SamplingParams(**kwargs)


@pytest.mark.integration
def test_prompt_over_context_is_refused(hf_engine):
    with pytest.raises(UserError, match="exceeds the context length"):
        hf_engine.generate(["1+1=" * 100], SamplingParams(max_tokens=8))


@pytest.mark.integration
def test_load_engine_refuses_an_option_the_engine_does_not_take(base_artifact):
    """Loaders used to swallow unknown options (`**_`): a typo'd option now names what the engine takes."""
    from lifecycle.engine import load_engine

    with pytest.raises(UserError, match=r"takes no option context_lenght; it takes: threads, "):
        load_engine(base_artifact, context_lenght=64)


@pytest.mark.unit
def test_every_engine_declares_the_interface_callers_use():
    import inspect

    from lifecycle.engine import Engine, engine_class, registered_engines

    for fmt in registered_engines():
        cls = engine_class(fmt)
        assert issubclass(cls, Engine) and cls.load.__func__ is not Engine.load.__func__, fmt  # implements load
        params = inspect.signature(cls.load).parameters
        assert "threads" in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()), fmt
        for name in ("generate", "stream", "score", "apply_chat_template", "count_tokens", "close"):
            assert callable(getattr(cls, name)), (fmt, name)
