"""The Engine interface: load an artifact by its format, then generate, stream and score.

    engine = load_engine("runs/merged")
    [out] = engine.generate([[{"role": "user", "content": "What is 2+3?"}]], SamplingParams(max_tokens=8))
    for ev in engine.stream("12+34=", SamplingParams(max_tokens=4)): print(ev.text, end="")
    [s] = engine.score([("12+34=", "46")])

Engines are registered by artifact format name as "module:Class" strings, so the registry itself imports
nothing heavy; the module is imported when an artifact of that format is loaded. Registering a name twice
is an error. Eval, serve and bench only ever talk to this interface.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Container, Iterable, Iterator, Union

from lifecycle.artifact import Artifact
from lifecycle.errors import UserError

Chat = list[dict]
Prompt = Union[str, Chat, list[int]]  # raw text, a chat, or token ids (completions only)


@dataclass
class TokenLogprob:
    """One token's log-probability under the model (before temperature and top_p), with its top alternatives."""
    token: str  # the token's own text; a partial UTF-8 character decodes to U+FFFD, so use `bytes`
    token_id: int
    bytes: list[int]
    logprob: float | None  # None for a prompt's first token: nothing predicts it
    top: list["TokenLogprob"] = field(default_factory=list)  # the k most likely tokens at this position


@dataclass
class SamplingParams:
    max_tokens: int = 64  # 0 is allowed only with prompt_logprobs (score the prompt, generate nothing)
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None  # None: none; k >= 0: each generated token's logprob and its top k (k <= 20)
    prompt_logprobs: int | None = None  # the same for the prompt's tokens (completions `echo`)
    response_format: dict | None = None  # OpenAI's {"type": "json_object"} or {"type": "json_schema", ...}

    def __post_init__(self) -> None:
        if self.max_tokens < 0 or (self.max_tokens == 0 and self.prompt_logprobs is None):
            raise UserError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise UserError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        for name in ("logprobs", "prompt_logprobs"):
            k = getattr(self, name)
            if k is not None and not 0 <= k <= 20:
                raise UserError(f"{name} must be between 0 and 20, got {k}")
        if isinstance(self.stop, str):
            self.stop = [self.stop]


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    logprobs: list[TokenLogprob] | None = None  # with params.logprobs: one per generated token kept in `text`
    prompt_logprobs: list[TokenLogprob] | None = None  # with params.prompt_logprobs: one per prompt token


@dataclass
class StreamEvent:
    text: str
    finish_reason: str | None = None  # set on the last event only
    completion_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None  # with params.logprobs: the tokens whose text this event carries
    prompt_logprobs: list[TokenLogprob] | None = None  # with params.prompt_logprobs: on the first event only


@dataclass
class Score:
    logprob: float  # sum of log-probabilities of the continuation's tokens
    num_tokens: int
    is_greedy: bool  # every continuation token was the argmax


class Engine(ABC):
    """A loaded model behind one interface. Prompts are raw strings or chats (lists of role/content).

    What callers may use, and every engine provides:
    - `load(artifact, threads=0, **its own options)`: a classmethod; an option the engine does not take is a
      UserError (`load_engine` says which ones it takes), never silently ignored;
    - `generate`, `stream`, `score`: the three operations;
    - `tok`: the Hugging Face tokenizer of the artifact (chat template, special tokens);
    - `apply_chat_template(messages)`: the prompt text a chat becomes;
    - `count_tokens(prompt)`, `context_length`, `eos_ids` (every id that ends generation);
    - `max_batch_size`: prompts one `generate` call runs together (1: one at a time);
    - `logits(ids)`: [len(ids), vocab] next-token logits, where the runtime can give them (`has_logits`);
    - `close()`.
    """

    artifact: Artifact | None = None
    tok = None
    eos_ids: list[int] = []
    max_batch_size: int = 1

    @classmethod
    def load(cls, artifact: Artifact, threads: int = 0) -> "Engine":
        """Load `artifact`; `threads` = CPU threads for the runtime (0 = its default). Engines registered for
        an artifact format implement it; others (an HTTP endpoint, a mock) are built directly."""
        raise NotImplementedError(f"{cls.__name__} is not loaded from an artifact")

    @abstractmethod
    def generate(self, prompts: list[Prompt], params: SamplingParams | None = None) -> list[Completion]:
        ...

    @abstractmethod
    def stream(self, prompt: Prompt, params: SamplingParams | None = None) -> Iterator[StreamEvent]:
        ...

    @abstractmethod
    def score(self, requests: list[tuple[str, str]]) -> list[Score]:
        """Log-likelihood of each continuation given its context (both raw text)."""

    def apply_chat_template(self, messages: list[dict]) -> str:
        if not getattr(self.tok, "chat_template", None):
            raise UserError("this model's tokenizer has no chat template; send a raw prompt instead")
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @property
    def context_length(self) -> int:
        return 0

    @property
    def has_logits(self) -> bool:
        return type(self).logits is not Engine.logits

    def logits(self, ids: list[int]):
        raise NotImplementedError(f"{type(self).__name__} gives no per-position logits")

    def count_tokens(self, prompt: Prompt) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release memory; the engine is unusable afterwards."""


def first_stop(text: str, stops: list[str]) -> int | None:
    """Index of the earliest stop string in `text`, or None."""
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def stop_prefix_len(text: str, stops: list[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def byte_fallback_ids(tok) -> frozenset[int]:
    """Ids of a SentencePiece byte-fallback vocabulary's byte pieces (`<0x41>`); empty for other tokenizers."""
    return frozenset(i for piece, i in tok.get_vocab().items()
                     if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"))


def detokenize_stream(tokens: Iterable[int], decode: Callable[[list[int]], str], params: SamplingParams,
                      eos_ids: Iterable[int], byte_tokens: Container[int] = frozenset(),
                      logprobs: list | None = None) -> Iterator[StreamEvent]:
    """Turn generated token ids into StreamEvents whose texts join to exactly what decoding all the ids at once
    gives (cut at the first stop string). EOS and stop strings end it. Held back until resolved: a trailing run
    of U+FFFD (an incomplete UTF-8 character: byte-fallback decoders write one per byte token, byte-level BPE
    one per sequence), a tail that could still become a stop string, and the text of a trailing run of
    `byte_tokens` (see `byte_fallback_ids`: such a decoder turns a whole run into U+FFFDs if a later byte makes
    it invalid, `\n` included). The rest is flushed at the end.

    `logprobs`: a list the token iterator appends token i's TokenLogprob to before yielding token i. Each
    event then carries the entries of the tokens whose text starts within the text sent so far; the last event
    carries the rest, except tokens that start at or after a stop string's cut (the rule `kept_tokens` states)."""
    eos = set(eos_ids)
    new: list[int] = []
    starts: list[int] = []  # where token i's text starts (the stable text before it)
    sent, reason, run, given, text = 0, "length", 0, 0, ""

    def take(upto: int) -> list | None:  # entries of tokens starting before `upto` characters
        nonlocal given
        if logprobs is None:
            return None
        end = given
        while end < len(new) and starts[end] < upto:
            end += 1
        out, given = logprobs[given:end], end
        return out

    for t in tokens:
        starts.append(len(text.rstrip("\ufffd")))
        new.append(t)
        if t in eos:
            reason = "stop"
            break
        run = run + 1 if t in byte_tokens else 0
        text = decode(new)
        cut = first_stop(text, params.stop)
        if cut is not None:
            if cut > sent:
                yield StreamEvent(text[sent:cut], completion_tokens=len(new), logprobs=take(cut))
            yield StreamEvent("", finish_reason="stop", completion_tokens=len(new), logprobs=take(cut))
            return
        stable = (decode(new[:-run]) if run else text).rstrip("\ufffd")
        safe = len(stable) - stop_prefix_len(stable, params.stop)
        if safe > sent:
            yield StreamEvent(text[sent:safe], completion_tokens=len(new), logprobs=take(safe))
            sent = safe
    text = decode(new) if new else ""  # flush what was held back (an EOS token's own text counts, as in decode)
    cut = first_stop(text, params.stop)
    limit = 1 << 62  # no cut: every remaining token, EOS included
    if cut is not None:
        text, reason, limit = text[:cut], "stop", cut
    if len(text) > sent:
        yield StreamEvent(text[sent:], completion_tokens=len(new), logprobs=take(limit))
    yield StreamEvent("", finish_reason=reason, completion_tokens=len(new), logprobs=take(limit))


def kept_tokens(ids: list[int], decode: Callable[[list[int]], str], cut: int | None) -> int:
    """How many generated tokens a Completion's logprobs keep: all of them, or when a stop string cut the text
    at character `cut`, those whose text starts before it."""
    if cut is None:
        return len(ids)
    n = 0
    while n < len(ids) and len(decode(ids[:n]).rstrip("\ufffd")) < cut:
        n += 1
    return n


# format name -> "module:Class". Other packages add theirs through the `lifecycle.engines` entry point
# (pyproject.toml): quantize registers every format it makes, so this core module names none of them.
_ENGINES: dict[str, str] = {}
_PLUGINS_LOADED = False


def _load_plugins() -> None:
    """Run each `lifecycle.engines` entry point once (each calls register_engine for its formats)."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="lifecycle.engines"):
        ep.load()()


def register_engine(format_name: str, target: str) -> None:
    if format_name in _ENGINES:
        raise ValueError(f"engine for format '{format_name}' is already registered ({_ENGINES[format_name]})")
    if ":" not in target:
        raise ValueError(f"engine target must be 'module:Class', got {target!r}")
    _ENGINES[format_name] = target


def registered_engines() -> dict[str, str]:
    _load_plugins()
    return dict(_ENGINES)


def engine_class(format_name: str) -> type[Engine]:
    _load_plugins()
    if format_name not in _ENGINES:
        known = ", ".join(sorted(_ENGINES)) or "none"
        raise UserError(f"no engine for artifact format '{format_name}' (known: {known})")
    module, cls = _ENGINES[format_name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_engine(artifact: Artifact | str, **options) -> Engine:
    """Load an artifact (or a path or model name) with the engine registered for its format."""
    import inspect

    if not isinstance(artifact, Artifact):
        from lifecycle.models import resolve

        artifact = resolve(artifact)
    cls = engine_class(artifact.format)
    takes = [p for p in inspect.signature(cls.load).parameters if p not in ("artifact", "self", "cls")]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise UserError(f"the {artifact.format} engine ({cls.__name__}) takes no option {', '.join(unknown)}; "
                        f"it takes: {', '.join(takes)}")
    return cls.load(artifact, **options)


register_engine("hf", "lifecycle.engines.hf:HFEngine")
register_engine("adapter", "lifecycle.engines.hf:HFEngine")
