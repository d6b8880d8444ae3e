"""The family checkpoints (tests/families.py): real vocabularies give llama.cpp's ids, and each family's quirks
survive a load through transformers' Auto classes."""

import hashlib
import json
import lzma
import random

import pytest

import families as F

pytestmark = pytest.mark.integration

CHAT = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
VOCAB_OF = {"qwen2": "qwen2", "llama3": "llama-bpe", "mistral": "llama-spm", "phi3": "phi-3"}


@pytest.fixture(scope="module")
def load(family_checkpoints, torch_one_thread):
    """load(family) -> (path, tokenizer, config, model), each loaded once per module."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cache = {}

    def get(family):
        if family not in cache:
            path = family_checkpoints(family)
            cache[family] = (path, AutoTokenizer.from_pretrained(path), AutoConfig.from_pretrained(path),
                             AutoModelForCausalLM.from_pretrained(path))
        return cache[family]

    return get


def _tensor_names(path):
    from safetensors import safe_open

    with safe_open(path / "model.safetensors", "pt") as f:
        return set(f.keys())


# ---------------------------------------------------------------------------------------------- vocabularies

@pytest.mark.parametrize("name", ["llama-spm", "phi-3"])
def test_gguf_metadata_parser_agrees_with_gguf_reader(tmp_path, name):
    from gguf import GGUFReader

    raw = lzma.decompress((F.FIXTURES / f"ggml-vocab-{name}.gguf.xz").read_bytes())
    (tmp_path / "v.gguf").write_bytes(raw)
    fields = {k: f.contents() for k, f in GGUFReader(tmp_path / "v.gguf").fields.items() if not k.startswith("GGUF.")}
    assert F.read_gguf_kv(raw) == fields


@pytest.mark.parametrize("family", list(VOCAB_OF))
def test_tokenizer_gives_llama_cpp_ids(load, family):
    tok = load(family)[1]
    cases = F.vocab_tests(VOCAB_OF[family])
    assert len(cases) == 46
    wrong = [(text, ids) for text, ids in cases if tok.encode(text, add_special_tokens=False) != ids]
    assert wrong == []


@pytest.mark.parametrize("family", ["mistral", "phi3"])
def test_sentencepiece_model_gives_llama_cpp_ids(family_checkpoints, load, family):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(family_checkpoints(family) / "tokenizer.model"))
    assert sp.vocab_size() == 32000
    assert all(sp.encode(text) == ids for text, ids in F.vocab_tests(VOCAB_OF[family]))
    # and the HF tokenizer agrees with it beyond llama.cpp's texts: whitespace runs, digits, bytes
    tok = load(family)[1]
    rnd = random.Random(0)
    alphabet = list("  \t\n\nab,.!?'Hé wörld数3") + ["    ", "   Hello", "\u2581", "🦙"]
    texts = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 24))) for _ in range(300)]
    assert [t for t in texts if tok.encode(t, add_special_tokens=False) != sp.encode(t)] == []


def test_llama_tokenizer_class_drops_the_dummy_prefix_before_a_leading_space(family_checkpoints):
    """AutoTokenizer loads Mistral/Phi-3 as TokenizersBackend and uses tokenizer.json as written (exact, above).
    Forcing transformers 5's LlamaTokenizer rebuilds the pipeline with a Metaspace pre-tokenizer that prepends
    "▁" only when the text does not already start with one, while SentencePiece (and llama.cpp) always add
    the dummy prefix. So exactly the texts that start with a space lose one "▁": " Hello" -> [▁Hello], not
    [▁, ▁Hello]. Code that names LlamaTokenizer explicitly gets these ids."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    path = family_checkpoints("mistral")
    tok = LlamaTokenizer.from_pretrained(path)
    sp = spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model"))
    cases = F.vocab_tests("llama-spm")
    differ = [text for text, ids in cases if tok.encode(text, add_special_tokens=False) != ids]
    assert differ == [text for text, _ in cases if text.startswith(" ")] and len(differ) == 15
    pieces = lambda ids: "".join(tok.convert_ids_to_tokens(ids))  # noqa: E731
    assert all(pieces(tok.encode(text, add_special_tokens=False)) == pieces(sp.encode(text))[1:] for text in differ)


@pytest.mark.parametrize("family,pre", [("qwen2", "qwen2"), ("llama3", "llama-bpe")])
def test_llama_cpp_converter_recognises_the_bpe_pre_tokenizer(load, family, pre):
    from conversion import TextModel

    # hashes tokenizer.encode(<fixed text>) (special tokens included) against its table of known vocabularies
    assert TextModel.get_vocab_base_pre(None, load(family)[1]) == pre


# ---------------------------------------------------------------------------------------------- every family

@pytest.mark.parametrize("family,cls,vocab,n_tok,kv,tied,dtype,ctx,files", [
    ("qwen2", "Qwen2ForCausalLM", 151936, 151665, 2, True, "float32", 32768, {"tokenizer.json"}),
    ("qwen2-chatml", "Qwen2ForCausalLM", 151936, 151665, 2, True, "float32", 32768, {"tokenizer.json"}),
    ("llama3", "LlamaForCausalLM", 128256, 128256, 2, False, "bfloat16", 131072, {"tokenizer.json"}),
    ("mistral", "MistralForCausalLM", 32000, 32000, 2, False, "float32", 32768, {"tokenizer.json", "tokenizer.model"}),
    ("phi3", "Phi3ForCausalLM", 32064, 32011, 4, False, "float32", 131072, {"tokenizer.json", "tokenizer.model"}),
])
def test_family_shape_and_forward(load, family, cls, vocab, n_tok, kv, tied, dtype, ctx, files):
    import torch

    path, tok, config, model = load(family)
    assert type(model).__name__ == cls and config.vocab_size == vocab and len(tok) == n_tok
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (64, 128, 2)
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, kv)
    assert config.max_position_embeddings == ctx
    assert {p.name for p in path.iterdir() if p.name.startswith(("tokenizer.", "vocab.", "merges."))} == files
    assert config.tie_word_embeddings is tied
    assert (model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()) is tied
    assert ("lm_head.weight" in _tensor_names(path)) is not tied
    assert str(model.dtype) == f"torch.{dtype}"
    assert json.loads((path / "config.json").read_text())["torch_dtype"] == dtype

    enc = tok.apply_chat_template(CHAT[:1], add_generation_prompt=True, return_dict=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**enc).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], vocab)
    last = logits[0, -1].float()
    assert torch.isfinite(logits).all() and last.std() > 0  # random, but a real distribution


def test_qwen2(load):
    path, tok, config, _ = load("qwen2")
    assert tok.bos_token is None and tok("Hello world").input_ids == [9707, 1879]  # no BOS, ever
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token, tok.pad_token_id) == ("<|im_end|>", 151645,
                                                                                     "<|endoftext|>", 151643)
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<tool_call>", "<|file_sep|>"]) == [151644, 151657, 151664]
    assert "<|vision_pad|>" in tok.all_special_tokens and "<tool_call>" not in tok.all_special_tokens
    assert config.model_type == "qwen2" and config.rope_parameters["rope_theta"] == 1e6
    gen = json.loads((path / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [151645, 151643] and gen["do_sample"] is True
    assert tok.chat_template == (F.FIXTURES / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text()
    text = tok.apply_chat_template(CHAT, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")  # default system prompt
    assert text.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n")
    prompt = tok.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_qwen2_chatml_is_qwen2_with_a_plain_template(load, family_checkpoints):
    tok = load("qwen2-chatml")[1]
    assert tok.apply_chat_template(CHAT, tokenize=False) == (
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n")
    assert tok.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    digest = [hashlib.sha256((family_checkpoints(f) / "model.safetensors").read_bytes()).digest()
              for f in ("qwen2", "qwen2-chatml")]
    assert digest[0] == digest[1]  # same seed, same weights


def test_llama3(load):
    path, tok, config, _ = load("llama3")
    assert tok("Hello world").input_ids == [128000, 9906, 1917]  # BOS from the post-processor
    assert tok.pad_token is None and (tok.eos_token, tok.eos_token_id) == ("<|eot_id|>", 128009)
    assert tok.convert_ids_to_tokens([128004, 128008, 128010, 128255]) == [
        "<|finetune_right_pad_id|>", "<|eom_id|>", "<|python_tag|>", "<|reserved_special_token_247|>"]
    rope = config.rope_parameters
    assert rope["rope_type"] == "llama3" and rope["rope_theta"] == 500000.0
    assert (rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]) == (8.0, 1.0, 4.0)
    assert rope["original_max_position_embeddings"] == 8192
    raw = json.loads((path / "config.json").read_text())  # the Hub's layout, not transformers 5's
    assert raw["rope_scaling"]["rope_type"] == "llama3" and "rope_parameters" not in raw
    assert json.loads((path / "generation_config.json").read_text())["eos_token_id"] == [128001, 128008, 128009]
    assert tok.chat_template == (F.FIXTURES / "meta-llama-Llama-3.2-3B-Instruct.jinja").read_text()
    text = tok.apply_chat_template(CHAT, tokenize=False)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date:")
    assert text.endswith("<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>")
    prompt = tok.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_mistral(load):
    _, tok, config, _ = load("mistral")
    assert tok("Hello world").input_ids == [1, 15043, 3186]
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", None)
    assert config.sliding_window is None and config.rope_parameters["rope_theta"] == 1e6
    assert tok.apply_chat_template(CHAT, tokenize=False) == "<s>[INST] Hi there [/INST]Hello!</s>"
    assert tok.apply_chat_template(CHAT + CHAT[:1], tokenize=False, add_generation_prompt=True).endswith(
        "Hello!</s>[INST] Hi there [/INST]")
    with pytest.raises(Exception, match="no system role"):
        tok.apply_chat_template([{"role": "system", "content": "Be brief."}] + CHAT, tokenize=False)
    with pytest.raises(Exception, match="must alternate"):
        tok.apply_chat_template(CHAT[:1] * 2, tokenize=False)


def test_phi3(load):
    path, tok, config, model = load("phi3")
    names = _tensor_names(path)
    assert "model.layers.0.self_attn.qkv_proj.weight" in names and "model.layers.0.mlp.gate_up_proj.weight" in names
    assert not any(".q_proj." in n or ".gate_proj." in n for n in names)
    assert tok("Hello world").input_ids == [15043, 3186]  # add_bos_token is false in Phi-3.5
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token, tok.padding_side) == (
        "<|endoftext|>", 32000, "<|endoftext|>", "left")
    assert tok.convert_tokens_to_ids(["<|assistant|>", "<|end|>", "<|user|>"]) == [32001, 32007, 32010]
    assert json.loads((path / "generation_config.json").read_text())["eos_token_id"] == [32007, 32001, 32000]
    rope = config.rope_parameters
    assert rope["rope_type"] == "longrope" and len(rope["long_factor"]) == len(rope["short_factor"]) == 8
    assert tok.apply_chat_template(CHAT, tokenize=False) == (
        "<|user|>\nHi there<|end|>\n<|assistant|>\nHello!<|end|>\n<|endoftext|>")
    assert tok.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True).endswith("<|assistant|>\n")


# ---------------------------------------------------------------------------------------------- maker

def test_qwen25_05b_shape_is_the_real_one(torch_one_thread):
    torch = torch_one_thread
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = F.checkpoint_files("qwen2", "qwen2.5-0.5b")["config.json"]
    config = AutoConfig.for_model(**raw)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == 494_032_768  # Qwen2.5-0.5B's count
    assert raw["torch_dtype"] == "bfloat16" and raw["tie_word_embeddings"] and raw["max_window_layers"] == 21
    with pytest.raises(ValueError, match="qwen2 families only"):
        F.checkpoint_files("llama3", "qwen2.5-0.5b")


def test_weights_follow_the_seed(tmp_path, torch_one_thread):
    def digest(seed, name):
        path = F.make_checkpoint("mistral", tmp_path / name, seed=seed)
        return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()

    assert digest(0, "a") == digest(0, "b") != digest(1, "c")
