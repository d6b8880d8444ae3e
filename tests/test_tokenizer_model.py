"""The built-in tokenizer and model: single-digit tokens, exact round trips, and save/load parity."""

import json

import pytest

from lifecycle.data import synth


@pytest.mark.integration
def test_digits_are_single_tokens_and_text_round_trips(hf_engine):
    tok = hf_engine.tok
    for text in ["12+34=46", "reverse abc = cba", "Let me add 7 and 58. The answer is 65."]:
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.decode(ids) == text
    digits = [t for t in tok.convert_ids_to_tokens(tok("9876543210", add_special_tokens=False).input_ids) if t != "▁"]
    assert digits == list("9876543210")


@pytest.mark.integration
def test_chat_template_marks_assistant_tokens_only(hf_engine):
    tok = hf_engine.tok
    chat = [{"role": "user", "content": "What is 1+2?"}, {"role": "assistant", "content": "3"}]
    enc = tok.apply_chat_template(chat, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(marked) == "3<|im_end|>"
    assert tok.apply_chat_template(chat, tokenize=False) == "<s>" + synth.chat_text(chat)


@pytest.mark.unit
def test_builtin_manifest_records_how_it_was_made(base_artifact):
    made = base_artifact.created_by
    assert made["stage"] == "pretrain" and made["command"].startswith("lifecycle pretrain")
    assert made["options"]["seed"] == 0
    assert base_artifact.metrics["raw_exact_match"] >= 0.9
    assert base_artifact.parent is None


@pytest.mark.integration
def test_model_round_trip_keeps_logits(tmp_path, base_artifact, torch_one_thread):
    torch = torch_one_thread
    from transformers import AutoModelForCausalLM

    from lifecycle.train.tokenizer import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base_artifact.path))
    tok = load_tokenizer(base_artifact.path)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    ids = tok(["12+34=46"], return_tensors="pt").input_ids
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, again(ids).logits)
    assert load_tokenizer(tmp_path)("12+34=46").input_ids == ids[0].tolist()
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is True


@pytest.mark.unit
def test_held_out_pairs_never_reach_training_data():
    import re

    pair = re.compile(r"(\d+)\s*(?:\+|plus|and)\s*(\d+)")
    items = synth.eval_items(50)
    assert all(synth.is_held_out(it["a"], it["b"]) for it in items)
    texts = list(synth.pretrain_lines(3000, seed=3))
    texts += [synth.chat_text(r["messages"]) for r in synth.sft_records(300)]
    texts += [r["prompt"][0]["content"] for r in synth.preference_records(300)]
    seen = [tuple(map(int, m)) for t in texts for m in pair.findall(t)]
    assert len(seen) > 2000
    assert not any(synth.is_held_out(a, b) for a, b in seen)
