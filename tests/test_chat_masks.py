"""SFT's assistant-only loss mask on real families' chat templates (stock and custom, with and without
{% generation %} markers): the masked tokens decode to exactly the assistant replies plus the end-of-turn
marker each template writes, and templates that refuse a system role get it folded, counted."""

import pytest
from transformers import AutoTokenizer

from lifecycle.train.chat_masks import FOLDED, tokenize_chat, tokenize_chats

pytestmark = pytest.mark.integration

CHAT = [{"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "用一句话介绍它。"},
        {"role": "assistant", "content": "巴黎是法国的首都 🇫🇷。"}]
# what each template writes right after an assistant reply (the model must learn to end its turn); Phi-3.5's
# stock template also writes eos_token after the last message of a conversation
END = {"qwen2": "<|im_end|>", "qwen2-chatml": "<|im_end|>", "llama3": "<|eot_id|>", "mistral": "</s>",
       "phi3": "<|end|>"}
END_LAST = {**END, "phi3": "<|end|><|endoftext|>"}


def _masked_pieces(tok, row):
    """Decoded runs of consecutive masked tokens."""
    runs, cur = [], []
    for t, m in zip(row["input_ids"], row["assistant_masks"]):
        if m:
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


@pytest.mark.parametrize("family", ["qwen2", "qwen2-chatml", "llama3", "mistral", "phi3"])
def test_mask_covers_exactly_the_assistant_turns(family, family_checkpoints):
    tok = AutoTokenizer.from_pretrained(family_checkpoints(family))
    row = tokenize_chat(tok, CHAT)
    assert len(row["input_ids"]) == len(row["assistant_masks"])
    pieces = [p.strip() for p in _masked_pieces(tok, row)]
    assert pieces == [f"Paris.{END[family]}", f"巴黎是法国的首都 🇫🇷。{END_LAST[family]}"], pieces


def test_builtin_template_with_generation_markers_uses_transformers_mask(base_artifact):
    tok = AutoTokenizer.from_pretrained(base_artifact.path)
    row = tokenize_chat(tok, CHAT[:2])
    enc = tok.apply_chat_template(CHAT[:2], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert row["assistant_masks"] == list(enc["assistant_masks"]) and any(row["assistant_masks"])


def test_system_role_folded_for_templates_without_one_and_bad_records_counted(family_checkpoints):
    tok = AutoTokenizer.from_pretrained(family_checkpoints("mistral"))
    with_system = {"messages": [{"role": "system", "content": "Be brief."}] + CHAT[:2]}
    not_alternating = {"messages": [CHAT[0], CHAT[0], CHAT[1]]}
    rows, notes = tokenize_chats(tok, [with_system, {"messages": CHAT}, not_alternating], max_length=512)
    assert len(rows) == 2 and notes[FOLDED] == 1
    assert sum(n for why, n in notes.items() if why.startswith("dropped: chat template refused")) == 1
    assert "Be brief." in tok.decode(rows[0]["input_ids"])


def test_truncation_that_cuts_every_assistant_token_drops_the_record(family_checkpoints):
    tok = AutoTokenizer.from_pretrained(family_checkpoints("qwen2"))
    long = {"messages": [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "ok"}]}
    rows, notes = tokenize_chats(tok, [long, {"messages": CHAT}], max_length=128)
    assert len(rows) == 1 and any("no assistant token within max_length 128" in w for w in notes)
