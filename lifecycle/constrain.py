"""`response_format` (JSON output) as constrained decoding with llguidance, for the torch engines.

    schema = json_schema_of({"type": "json_object"})             # {"type": "object"}; None for text
    guide = JsonGuide(tok, schema, n_vocab, eos_ids)             # one sequence
    t = pick(guide.mask(logits)); guide.accept(t)                # the token loop
    model.generate(..., logits_processor=[JsonLogitsProcessor(tok, schema, n_vocab, eos_ids, batch)])

llguidance (the Rust library behind Guidance, also used by vLLM and SGLang) compiles the JSON schema to a
grammar and gives, at each step, the set of tokens that keep the output valid; every other token's logit
becomes -inf before temperature and top_p. Why llguidance and not xgrammar: xgrammar 0.2.9 requires triton
on Linux x86_64 (a GPU compiler, hundreds of MB, no use on CPU); llguidance is one 3 MB wheel with no
dependencies. JSON is written compactly (no free whitespace), so a weak model cannot wander in blank space.
The GGUF engine uses llama.cpp's own grammar sampler instead (quantize/gguf_format.py).
"""

from __future__ import annotations

import json

import numpy as np

from lifecycle.errors import UserError

_TOKENIZERS: dict[tuple, tuple] = {}  # (id(tok), n_vocab, eos) -> (tok, LLTokenizer): building one costs ~1 s on 150k tokens


def json_schema_of(response_format: dict | None) -> dict | None:
    """The JSON schema a response_format asks for: None for none/text, {"type": "object"} for json_object."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise UserError("response_format must be an object such as {\"type\": \"json_object\"}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise UserError("response_format json_schema needs a 'json_schema' object with a 'schema'")
        schema = spec.get("schema", {"type": "object"})
        if not isinstance(schema, dict):
            raise UserError("response_format json_schema.schema must be a JSON object (a JSON Schema)")
        return schema
    raise UserError(f"response_format type must be text, json_object or json_schema, got {kind!r}")


def _lltokenizer(tok, n_vocab: int, eos_ids: list[int]):
    key = (id(tok), n_vocab, tuple(eos_ids))
    hit = _TOKENIZERS.get(key)
    if hit is None or hit[0] is not tok:
        try:
            import llguidance.hf
        except ImportError:
            from lifecycle.extras import install_command

            raise UserError(f"response_format needs llguidance; run: {install_command('serve')}") from None
        hit = _TOKENIZERS[key] = (tok, llguidance.hf.from_tokenizer(tok, n_vocab=n_vocab, eos_token=list(eos_ids) or None))
    return hit[1]


def _grammar(schema: dict) -> str:
    from llguidance import LLMatcher

    try:
        grammar = LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults={"whitespace_flexible": False})
    except (ValueError, RuntimeError, TypeError) as e:
        raise UserError(f"response_format schema cannot be used: {str(e).splitlines()[0]}") from None
    return grammar


class JsonGuide:
    """One sequence's grammar state: which tokens are allowed next, and the tokens taken so far."""

    def __init__(self, tok, schema: dict, n_vocab: int, eos_ids: list[int]):
        from llguidance import LLMatcher

        self.n_vocab = n_vocab
        self.matcher = LLMatcher(_lltokenizer(tok, n_vocab, eos_ids), _grammar(schema))
        if self.matcher.is_error():
            raise UserError(f"response_format schema cannot be used: {self.matcher.get_error().splitlines()[0]}")
        self.eos_ids = list(eos_ids)
        import llguidance.numpy as lln

        self._lln = lln
        self._bits = lln.allocate_token_bitmask(1, n_vocab)

    def allowed(self) -> np.ndarray:
        """Boolean [n_vocab]: the tokens that keep the output valid (only EOS once the JSON is complete)."""
        if self.matcher.is_stopped():
            ok = np.zeros(self.n_vocab, dtype=bool)
            ok[[e for e in self.eos_ids if e < self.n_vocab]] = True
            return ok
        self._lln.fill_next_token_bitmask(self.matcher, self._bits, 0)
        return np.unpackbits(self._bits[0].view(np.uint8), bitorder="little")[: self.n_vocab].astype(bool)

    def mask(self, logits: np.ndarray, greedy: bool = False) -> np.ndarray:
        """The logits with every forbidden token at -inf (`greedy` changes nothing here: the mask is cheap)."""
        ok = self.allowed()
        out = np.full(logits.shape, -np.inf, dtype=np.float32)
        n = min(len(ok), logits.shape[-1])
        out[:n][ok[:n]] = logits[:n][ok[:n]]
        return out

    def accept(self, token: int) -> None:
        if not self.matcher.is_stopped() and not self.matcher.consume_token(int(token)):
            raise RuntimeError(f"constrained decoding: token {token} rejected ({self.matcher.get_error()})")


def json_logits_processor(tok, schema: dict, n_vocab: int, eos_ids: list[int], batch: int):
    """A transformers LogitsProcessor that keeps each of `batch` rows inside the schema (rows that ended are
    left alone). Custom processors run before temperature and top_p in transformers' generate."""
    import torch
    from transformers import LogitsProcessor

    guides = [JsonGuide(tok, schema, n_vocab, eos_ids) for _ in range(batch)]

    class _Json(LogitsProcessor):
        def __init__(self):
            self.steps = 0
            self.finished: set[int] = set()

        def __call__(self, input_ids, scores):
            for row, g in enumerate(guides):
                if row in self.finished:
                    continue
                if self.steps:
                    last = int(input_ids[row, -1])
                    if last in g.eos_ids:
                        self.finished.add(row)  # padding follows: nothing left to constrain
                        continue
                    g.accept(last)
                ok = torch.from_numpy(g.allowed())
                width = min(len(ok), scores.shape[-1])
                masked = torch.full_like(scores[row], float("-inf"))
                masked[:width][ok[:width]] = scores[row, :width][ok[:width]]
                scores[row] = masked
            self.steps += 1
            return scores

    proc = _Json()
    proc.guides = guides
    return proc
