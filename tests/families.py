"""Tiny random-weight Hugging Face checkpoints that carry real model families' quirks.

The project's own tiny model is not the only kind of model users bring. These makers write folders
that look like the real Qwen2.5 / Llama-3.x / Mistral-v0.2 / Phi-3.5 repositories (config.json in the
Hub's layout, real vocabularies and token ids, stock chat templates, special-token conventions) with
small random weights, so the toolkit can be tested on checkpoints that are not ours:

    from families import make_checkpoint            # tests/ is on sys.path under pytest
    path = make_checkpoint("llama3", tmp_path / "llama3")            # about 1-2 s
    big = make_checkpoint("qwen2", tmp_path / "q05", shape="qwen2.5-0.5b")   # real 0.5B shape, bf16

    python tests/families.py llama3 /tmp/llama3 [--shape tiny] [--seed 0]

In tests, use the session fixture instead: `family_checkpoints("llama3")` (tests/conftest.py).

Vocabularies come from llama.cpp's vocab-only GGUF files in tests/fixtures/families (see its README).
Each is decompressed and parsed once per process; the tokenizer files built from it are cached too.
"""

from __future__ import annotations

import functools
import json
import lzma
import struct
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "families"
SHAPES = {
    # widths: multiples of 64 (bnb NF4 on CPU), head_dim 16 (ORT CPU attention), GPTQ group 32 divides all
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, max_window_layers=21),
}
VOCAB = {"qwen2": "qwen2", "qwen2-chatml": "qwen2", "llama3": "llama-bpe", "mistral": "llama-spm", "phi3": "phi-3"}
SEP = "\n__ggml_vocab_test__\n"  # separates texts in llama.cpp's ggml-vocab-*.gguf.inp

# Byte-level BPE pre-tokenizer regexes, exactly as in the real tokenizer.json files.
QWEN2_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
LLAMA3_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Added tokens of Qwen2.5 (ids 151643...): (content, special). Tool and FIM tokens are not special there.
QWEN25_ADDED = [(t, True) for t in (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>")] + [(t, False) for t in (
        "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
        "<|repo_name|>", "<|file_sep|>")]
# Llama-3.1/3.2 renamed some of Llama-3.0's reserved tokens (the GGUF has 3.0's names); ids are unchanged.
LLAMA31_NAMED = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128004: "<|finetune_right_pad_id|>",
                 128006: "<|start_header_id|>", 128007: "<|end_header_id|>", 128008: "<|eom_id|>",
                 128009: "<|eot_id|>", 128010: "<|python_tag|>"}
# Phi-3's added tokens 32000-32010: everything but <|endoftext|> strips whitespace to its right.
PHI3_ADDED = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
              "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"]

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
MISTRAL_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}"
    "{{- raise_exception('This model has no system role: put instructions in the first user message') }}"
    "{%- endif %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}{{- '[INST] ' + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- message['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}"
)


# ----------------------------------------------------------------------------------------------------------
# GGUF vocabularies

def read_gguf_kv(buf: bytes) -> dict:
    """Key/value metadata of a GGUF file (v2/v3). gguf.GGUFReader gives the same values but needs ~8 s for a
    150k-token vocabulary (a numpy view per string); this plain parser needs ~0.1 s."""
    magic, version, _n_tensors, n_kv = struct.unpack_from("<IIQQ", buf, 0)
    if magic != 0x46554747 or version < 2:
        raise ValueError(f"not a GGUF v2+ file (magic {magic:#x}, version {version})")
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
    pos = 24

    def string():
        nonlocal pos
        (n,) = struct.unpack_from("<Q", buf, pos)
        pos += 8 + n
        return buf[pos - n:pos].decode("utf-8")

    def value(kind):
        nonlocal pos
        if kind == 8:
            return string()
        if kind == 9:
            item, n = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            if item in (8, 9):
                return [value(item) for _ in range(n)]
            fmt = f"<{n}{scalar[item][1]}"
            out = list(struct.unpack_from(fmt, buf, pos))
            pos += struct.calcsize(fmt)
            return out
        (v,) = struct.unpack_from(scalar[kind], buf, pos)
        pos += struct.calcsize(scalar[kind])
        return v

    meta = {}
    for _ in range(n_kv):
        key = string()
        (kind,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        meta[key] = value(kind)
    return meta


@functools.cache
def gguf_vocab(name: str) -> dict:
    """Metadata of fixtures/families/ggml-vocab-NAME.gguf.xz (decompressed and parsed once per process)."""
    return read_gguf_kv(lzma.decompress((FIXTURES / f"ggml-vocab-{name}.gguf.xz").read_bytes()))


def vocab_tests(name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's tokenizer test texts for a vocabulary and the ids it expects (no BOS/EOS)."""
    texts = (FIXTURES / f"ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8").split(SEP)
    ids = (FIXTURES / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    texts, ids = texts[:-1], ids[:-1]  # both files end with a separator
    assert len(texts) == len(ids), name
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, ids)]


def _added(content: str, special: bool = True, rstrip: bool = False) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": rstrip, "single_word": False,
            "special": special}


def _add_tokens(tok, added: dict[int, dict]) -> None:
    from tokenizers import AddedToken

    for i, t in sorted(added.items()):
        token = AddedToken(t["content"], special=t["special"], rstrip=t["rstrip"], normalized=False)
        (tok.add_special_tokens if t["special"] else tok.add_tokens)([token])
        assert tok.token_to_id(t["content"]) == i, (t, i)


@functools.cache
def _bpe_tokenizer(vocab: str) -> tuple[str, dict[int, dict]]:
    """(tokenizer.json text, added tokens by id) for the byte-level BPE vocabularies, as the real files are."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    meta = gguf_vocab(vocab)
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    n_bpe = types.index(3)  # the first control token ends the BPE vocabulary
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    qwen = vocab == "qwen2"
    extra = dict(continuing_subword_prefix="", end_of_word_suffix="") if qwen else {}
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens[:n_bpe])}, merges=merges, dropout=None,
                               fuse_unk=False, byte_fallback=False, ignore_merges=not qwen, **extra))
    split = pre_tokenizers.Split(Regex(QWEN2_REGEX if qwen else LLAMA3_REGEX), behavior="isolated", invert=False)
    tok.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(
        add_prefix_space=False, trim_offsets=not qwen, use_regex=False)])
    if qwen:
        tok.normalizer = normalizers.NFC()
        tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
        tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
        added = {n_bpe + k: _added(t, special) for k, (t, special) in enumerate(QWEN25_ADDED)}
    else:
        bos = "<|begin_of_text|>"
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
            processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                          special_tokens=[(bos, 128000)])])
        tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
        reserved = (i for i in range(n_bpe, len(tokens)) if i not in LLAMA31_NAMED)
        names = {**LLAMA31_NAMED, **{i: f"<|reserved_special_token_{k}|>" for k, i in enumerate(reserved)}}
        added = {i: _added(names[i]) for i in sorted(names)}
    _add_tokens(tok, added)
    return tok.to_str(), added


@functools.cache
def _spm_tokenizer(vocab: str, add_bos: bool) -> tuple[bytes, str, dict[int, dict]]:
    """(tokenizer.model, tokenizer.json text, added tokens by id) for the SentencePiece vocabularies.

    tokenizer.model is a SentencePiece BPE ModelProto rebuilt from the GGUF's pieces, scores and types.
    tokenizer.json has the form of the Hub's Llama-2/Mistral/Phi-3 files (transformers 4's converter):
    Prepend+Replace normalizer, byte fallback, merges ordered by piece score; it matches SentencePiece
    exactly. transformers 5 does not derive that from tokenizer.model: with `legacy: false` (Phi-3.5) its
    Metaspace drops the dummy prefix before a leading space, and its LlamaTokenizer orders merges by id,
    wrong for whitespace pieces ("▁▁" is id 259 but scores -1e9).
    """
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers.tokenization_utils_base import generate_merges

    meta = gguf_vocab(vocab)
    tokens, scores, types = (meta[f"tokenizer.ggml.{k}"] for k in ("tokens", "scores", "token_type"))
    n = 32000  # the SentencePiece model; phi-3's ids above it are added tokens (and llama.cpp's padding)
    proto = pb.ModelProto()
    for i in range(n):
        # llama.cpp marks tokens per tokenizer_config (phi-3's </s> is "user-defined"); the .model has
        # <unk> UNKNOWN and <s>, </s> CONTROL
        proto.pieces.add(piece=tokens[i], score=scores[i], type={0: 2, 1: 3, 2: 3}.get(i, types[i]))
    proto.trainer_spec.MergeFrom(pb.TrainerSpec(
        model_type=pb.TrainerSpec.BPE, vocab_size=n, byte_fallback=True, split_digits=True, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, allow_whitespace_only_pieces=True, max_sentencepiece_length=16))
    proto.normalizer_spec.MergeFrom(pb.NormalizerSpec(
        name="identity", add_dummy_prefix=True, remove_extra_whitespaces=False, escape_whitespaces=True))

    piece_vocab = {t: i for i, t in enumerate(tokens[:n])}
    merges = generate_merges(piece_vocab, dict(zip(tokens[:n], scores[:n])))
    tok = Tokenizer(models.BPE(vocab=piece_vocab, merges=merges, unk_token="<unk>", fuse_unk=True,
                               byte_fallback=True, dropout=None))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0" if add_bos else "$A:0", pair="<s>:0 $A:0 <s>:1 $B:1" if add_bos else "$A:0 $B:1",
        special_tokens=[("<s>", 1)])
    added = {0: _added("<unk>"), 1: _added("<s>"), 2: _added("</s>")}
    if vocab == "phi-3":
        added[2] = _added("</s>", special=False, rstrip=True)
        added.update({n + k: _added(t, rstrip=k > 0) for k, t in enumerate(PHI3_ADDED)})
    _add_tokens(tok, added)
    return proto.SerializeToString(), tok.to_str(), added


# ----------------------------------------------------------------------------------------------------------
# Per-family files, in the layout of the real repositories

def _template(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def _decoder(added: dict[int, dict]) -> dict:
    return {str(i): t for i, t in sorted(added.items())}


def _qwen2(family: str, shape: dict) -> tuple[dict, dict, dict]:
    """Qwen2.5-0.5B-Instruct; `qwen2-chatml` swaps the stock template for a plain ChatML one."""
    tok_json, added = _bpe_tokenizer("qwen2")
    template = _template("Qwen-Qwen2.5-7B-Instruct.jinja") if family == "qwen2" else CHATML_TEMPLATE
    files = {"tokenizer.json": tok_json, "tokenizer_config.json": {
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": _decoder(added),
        "additional_special_tokens": [t for t, special in QWEN25_ADDED[1:] if special], "bos_token": None,
        "chat_template": template, "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>",
        "errors": "replace", "model_max_length": 131072, "pad_token": "<|endoftext|>",
        "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None}}
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "attention_dropout": 0.0,
              "bos_token_id": 151643, "eos_token_id": 151645, "hidden_act": "silu", "initializer_range": 0.02,
              "max_position_embeddings": 32768, "max_window_layers": shape["num_hidden_layers"],
              "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768,
              "tie_word_embeddings": True, "use_cache": True, "use_sliding_window": False, "vocab_size": 151936}
    gen = {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
           "repetition_penalty": 1.1, "temperature": 0.7, "top_p": 0.8, "top_k": 20}
    return files, {**config, **shape}, gen


def _llama3(family: str, shape: dict) -> tuple[dict, dict, dict]:
    """Llama-3.1-8B-Instruct's config (untied embeddings), Llama-3.2's tokenizer names and template."""
    tok_json, added = _bpe_tokenizer("llama-bpe")
    files = {"tokenizer.json": tok_json, "tokenizer_config.json": {
        "added_tokens_decoder": _decoder(added), "bos_token": "<|begin_of_text|>",
        "chat_template": _template("meta-llama-Llama-3.2-3B-Instruct.jinja"), "clean_up_tokenization_spaces": True,
        "eos_token": "<|eot_id|>", "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast"}}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
              "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
              "hidden_act": "silu", "initializer_range": 0.02, "max_position_embeddings": 131072,
              "mlp_bias": False, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
              "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192, "rope_type": "llama3"},
              "rope_theta": 500000.0, "tie_word_embeddings": False, "use_cache": True, "vocab_size": 128256}
    gen = {"bos_token_id": 128000, "do_sample": True, "eos_token_id": [128001, 128008, 128009],
           "temperature": 0.6, "top_p": 0.9}
    return files, {**config, **shape}, gen


def _mistral(family: str, shape: dict) -> tuple[dict, dict, dict]:
    """Mistral-7B-Instruct-v0.2, with Llama-2's SentencePiece vocabulary standing in for Mistral's."""
    model, tok_json, added = _spm_tokenizer("llama-spm", add_bos=True)
    files = {"tokenizer.model": model, "tokenizer.json": tok_json, "tokenizer_config.json": {
        "add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": _decoder(added),
        "additional_special_tokens": [], "bos_token": "<s>", "chat_template": MISTRAL_TEMPLATE,
        "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": True,
        "model_max_length": 1000000000000000019884624838656, "pad_token": None, "sp_model_kwargs": {},
        "spaces_between_special_tokens": False, "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
        "use_default_system_prompt": False}}
    config = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "attention_dropout": 0.0,
              "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "initializer_range": 0.02,
              "max_position_embeddings": 32768, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
              "sliding_window": None, "tie_word_embeddings": False, "use_cache": True, "vocab_size": 32000}
    return files, {**config, **shape}, {"bos_token_id": 1, "eos_token_id": 2}


def _phi3(family: str, shape: dict) -> tuple[dict, dict, dict]:
    """Phi-3.5-mini-instruct: fused qkv/gate_up, no GQA, longrope to 128k, three eos ids."""
    model, tok_json, added = _spm_tokenizer("phi-3", add_bos=False)
    files = {"tokenizer.model": model, "tokenizer.json": tok_json, "tokenizer_config.json": {
        "add_bos_token": False, "add_eos_token": False, "added_tokens_decoder": _decoder(added),
        "bos_token": "<s>", "chat_template": _template("microsoft-Phi-3.5-mini-instruct.jinja"),
        "clean_up_tokenization_spaces": False, "eos_token": "<|endoftext|>", "legacy": False,
        "model_max_length": 131072, "pad_token": "<|endoftext|>", "padding_side": "left", "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>", "use_default_system_prompt": False}}
    half = shape["hidden_size"] // shape["num_attention_heads"] // 2  # longrope: one factor per rotary pair
    ramp = [k / (half - 1) for k in range(half)]  # made-up factors; the real ones were fitted per model
    config = {"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "attention_bias": False,
              "attention_dropout": 0.0, "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 32000,
              "hidden_act": "silu", "initializer_range": 0.02, "max_position_embeddings": 131072,
              "original_max_position_embeddings": 4096, "pad_token_id": 32000, "resid_pdrop": 0.0,
              "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 262144,
              "rope_scaling": {"type": "longrope", "long_factor": [round(1 + 31 * r * r, 4) for r in ramp],
                               "short_factor": [round(1 + 0.2 * r, 4) for r in ramp]},
              "tie_word_embeddings": False, "use_cache": True, "vocab_size": 32064}
    gen = {"bos_token_id": 1, "eos_token_id": [32007, 32001, 32000], "pad_token_id": 32000}
    return files, {**config, **shape, "num_key_value_heads": shape["num_attention_heads"]}, gen


BUILDERS = {"qwen2": _qwen2, "qwen2-chatml": _qwen2, "llama3": _llama3, "mistral": _mistral, "phi3": _phi3}
FAMILIES = tuple(BUILDERS)


def _random_weights(model, seed: int, std: float) -> None:
    """N(0, std) matrices and biases, 1 + N(0, std) norms, drawn in the model's dtype (no fp32 copies)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights appear once
            p.normal_(0.0, std, generator=gen)
            if p.ndim == 1 and "norm" in name:
                p.add_(1.0)


def checkpoint_files(family: str, shape: str = "tiny") -> dict:
    """{filename: str | bytes | dict} of a checkpoint but its weights (dicts are written as JSON)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose from {tuple(SHAPES)}")
    if shape != "tiny" and not family.startswith("qwen2"):
        raise ValueError(f"shape {shape!r} is for the qwen2 families only")
    if family not in BUILDERS:
        raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")
    dims = dict(SHAPES[shape])
    window = dims.pop("max_window_layers", None)
    files, config, gen = BUILDERS[family](family, dims)
    if window is not None:
        config["max_window_layers"] = window
    tv = {"transformers_version": "4.43.1"}  # what the Hub files say; loaders must not rely on it
    files["config.json"], files["generation_config.json"] = {**config, **tv}, {**gen, **tv}
    # Real checkpoints are bf16; the tiny qwen2/mistral/phi3 stay fp32 so that tests see both kinds.
    files["config.json"]["torch_dtype"] = "bfloat16" if family == "llama3" or shape != "tiny" else "float32"
    return files


def make_checkpoint(family: str, out: Path, shape: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight `family` checkpoint of `shape` to folder `out` (created) and return it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    files = checkpoint_files(family, shape)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(files["config.json"]))
    config = AutoConfig.from_pretrained(out)
    with torch.device("meta"):  # no init work, no fp32 copies: weights are drawn once, in their dtype
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, files["config.json"]["torch_dtype"]))
    model.to_empty(device="cpu")
    model.tie_weights()  # to_empty gave tied parameters separate storage
    _random_weights(model, seed, config.initializer_range)
    model.save_pretrained(out)
    # save_pretrained wrote config.json in transformers 5's layout and chat_template.jinja: use the Hub's layout
    (out / "chat_template.jinja").unlink(missing_ok=True)
    for name, content in files.items():
        if isinstance(content, dict):
            content = json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (out / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse
    import time

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("family", choices=FAMILIES)
    ap.add_argument("out", type=Path)
    ap.add_argument("--shape", default="tiny", choices=tuple(SHAPES))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    path = make_checkpoint(args.family, args.out, args.shape, args.seed)
    print(f"{path} ({time.perf_counter() - start:.1f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
