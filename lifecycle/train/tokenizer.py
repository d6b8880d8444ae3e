"""The built-in tokenizer: SentencePiece BPE with single-digit tokens, saved in Llama's original scheme.

A `tokenizer.model` plus `{"tokenizer_class": "LlamaTokenizer", "legacy": false}` is read identically by
transformers, the llama.cpp converter and onnxruntime-genai, so every later format keeps the same ids.
"""

from __future__ import annotations

import json
from pathlib import Path

IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# ChatML, opened by the BOS token so rendered text and tokenized chats agree. `{% generation %}` marks assistant tokens for TRL's assistant_only_loss; transformers renders
# with trim_blocks, so newlines are written as expressions.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_tokenizer(out_dir: Path, lines, vocab_size: int = 512, hard_vocab_limit: bool = True) -> Path:
    """Train the SentencePiece model on `lines` and write a transformers-loadable tokenizer folder.

    `hard_vocab_limit=False` lets a small corpus settle on fewer pieces than `vocab_size`."""
    import io

    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=hard_vocab_limit,
        split_digits=True,
        byte_fallback=True,
        character_coverage=1.0,
        user_defined_symbols=[IM_START, IM_END],
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "legacy": False,
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": IM_END,
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "padding_side": "left",
        "model_max_length": 256,
        "chat_template": CHAT_TEMPLATE,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out_dir


def load_tokenizer(folder: str | Path, **kw):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), **kw)
