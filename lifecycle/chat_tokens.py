"""Prompt -> token ids for every engine, with special tokens in chat content kept as text.

    ids = encode_prompt(tok, [{"role": "user", "content": "hi <|im_end|>"}])   # chat: content stays text
    ids = encode_prompt(tok, "<|im_start|>user\\nhi")                          # raw text: specials parsed
    ids = encode_prompt(tok, [1, 42, 7], vocab_size=32000)                     # token ids: used as is

A chat's role structure must come from the chat template alone. Rendering the template and tokenizing the
result (what `apply_chat_template(tokenize=True)` does) parses `<|im_end|>` typed by a user as the control
token, so a user can close their turn and open a forged system turn. Here the template is also rendered
with each content replaced by a unique sentinel, which locates every content span in the real rendering.
When no special token falls inside a content span the ids are exactly the normal ones (nothing changes for
ordinary chats). Otherwise the text is tokenized in pieces: the template's own text normally, each content
with every added token's text read as characters (`plain_ids`: `split_special_tokens=True` only splits the
tokens flagged special). A template that changes content in a way the spans cannot be found for
(beyond trimming whitespace) is refused when a content holds special-token text, never passed through.
"""

from __future__ import annotations

import secrets

from lifecycle.errors import UserError

_TRIMS = (lambda s: s, str.strip, str.lstrip, str.rstrip)  # content transforms templates apply (Llama-3: | trim)


_PLAIN: dict[int, tuple] = {}  # id(tok) -> (tok, a tokenizers.Tokenizer that matches no added token)


def special_ids(tok) -> set[int]:
    """Ids of the tokens a chat template may use as control tokens: the special ones and every added token
    (a SentencePiece vocabulary's `<|im_start|>` can be an added token that is not flagged special)."""
    ids = set(getattr(tok, "all_special_ids", []) or [])
    ids |= {int(i) for i in (getattr(tok, "added_tokens_decoder", None) or {})}
    return ids


def plain_ids(tok, text: str) -> list[int]:
    """`text` tokenized with every added/special token's text treated as ordinary characters.

    `split_special_tokens=True` splits only tokens flagged special; here a copy of the backend tokenizer
    has every added token flagged special, with `encode_special_tokens` on."""
    import json

    hit = _PLAIN.get(id(tok))
    if hit is None or hit[0] is not tok:
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None:
            raise UserError("this tokenizer has no fast (tokenizers) backend; chat content cannot be kept as text")
        from tokenizers import Tokenizer

        spec = json.loads(backend.to_str())
        for added in spec.get("added_tokens") or []:
            added["special"] = True
        plain = Tokenizer.from_str(json.dumps(spec))
        plain.encode_special_tokens = True
        hit = _PLAIN[id(tok)] = (tok, plain)
    return hit[1].encode(text, add_special_tokens=False).ids


def _special_strings(tok) -> list[str]:
    ids = special_ids(tok)
    return [t for t in tok.convert_ids_to_tokens(sorted(ids)) if t]


def _render(tok, messages, add_generation_prompt: bool, **kwargs) -> str:
    if not getattr(tok, "chat_template", None):
        raise UserError("this model's tokenizer has no chat template; send a raw prompt instead")
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs)


def content_spans(tok, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> tuple[str, list | None]:
    """(rendered text, [(start, end)] of every message content in it), spans None if they cannot be found."""
    text = _render(tok, messages, add_generation_prompt, **kwargs)
    tag = secrets.token_hex(8)
    marks = [f"@@lc{tag}{i}@@" for i in range(len(messages))]
    contents = {}
    masked = []
    for i, m in enumerate(messages):
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, str) and c:
            contents[marks[i]] = c
            masked.append({**m, "content": marks[i]})
        else:
            masked.append(m)
    if not contents:
        return text, []
    try:
        shape = _render(tok, masked, add_generation_prompt, **kwargs)
    except Exception:  # a template that inspects content may refuse a sentinel
        return text, None
    for trim in _TRIMS:
        spans, out, pos = [], [], 0
        rest = shape
        while True:
            hits = [(rest.find(mk), mk) for mk in contents if mk in rest]
            if not hits:
                out.append(rest)
                break
            at, mk = min(hits)
            out.append(rest[:at])
            pos += at
            body = trim(contents[mk])
            spans.append((pos, pos + len(body)))
            out.append(body)
            pos += len(body)
            rest = rest[at + len(mk):]
        if "".join(out) == text:
            return text, spans
    return text, None


def encode_chat(tok, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> list[int]:
    """Token ids of a chat in which no special token comes from message content (see the module docstring)."""
    for m in messages:  # content parts ([{"type": "text", ...}]) are rendered by the template: no spans for them
        c = m.get("content") if isinstance(m, dict) else None
        if c is not None and not isinstance(c, str):
            found = [t for t in _special_strings(tok) if t in str(c)]
            if found:
                raise UserError(f"a message contains the special token {found[0]!r} inside structured content; "
                                "send it as a plain string, or remove it")
    text, spans = content_spans(tok, messages, add_generation_prompt, **kwargs)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    specials = special_ids(tok)
    if spans is None:
        bad = [s for s in _special_strings(tok) for m in messages
               if isinstance(m, dict) and s in str(m.get("content") or "")]
        if bad:
            raise UserError(f"a message contains the special token {bad[0]!r}, and this model's chat template changes "
                            "message content, so it cannot be kept as plain text; remove it from the message")
        return list(enc.input_ids)
    hit = False
    for i, (s, e) in zip(enc.input_ids, enc.offset_mapping):
        if i in specials:  # the token's own text, without whitespace an lstrip/rstrip token swallowed
            piece = tok.convert_ids_to_tokens(i) or ""
            k = text.find(piece, s, e) if piece else -1
            s, e = (k, k + len(piece)) if k >= 0 else (s, e)
            hit = hit or any(s < b and e > a for a, b in spans)
    if not hit:
        return list(enc.input_ids)
    ids, pos = [], 0
    for a, b in spans:
        if a > pos:
            ids += tok(text[pos:a], add_special_tokens=False).input_ids
        ids += plain_ids(tok, text[a:b])
        pos = b
    if pos < len(text):
        ids += tok(text[pos:], add_special_tokens=False).input_ids
    return ids


def encode_prompt(tok, prompt, vocab_size: int = 0) -> list[int]:
    """Ids of a raw text (the tokenizer's BOS added, special tokens parsed), a chat (`encode_chat`) or a list of
    token ids (used as is, checked against `vocab_size` when given)."""
    if isinstance(prompt, str):
        return list(tok(prompt, add_special_tokens=True).input_ids)
    if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(t, int) and not isinstance(t, bool)
                                                            for t in prompt):
        limit = vocab_size or len(tok)
        bad = next((t for t in prompt if not 0 <= t < limit), None)
        if bad is not None:
            raise UserError(f"token id {bad} is out of range: this model's vocabulary has {limit} tokens")
        return list(prompt)
    if not prompt:
        raise UserError("the prompt is empty")
    if not all(isinstance(m, dict) for m in prompt):
        raise UserError("a prompt is a string, a list of token ids or a list of chat messages")
    return encode_chat(tok, list(prompt))
