"""Tokenize chats for SFT with a loss mask on the assistant turns, for any chat template.

    rows, notes = tokenize_chats(tok, records, max_length=512)   # [{"input_ids", "assistant_masks"}], {reason: n}

A template with `{% generation %}` blocks gives the mask directly (transformers' `return_assistant_tokens_mask`).
Any other template, stock or custom, is rendered prefix by prefix: the text before assistant turn i is the
conversation up to i with the generation prompt, and the turn ends where the conversation up to and including
i stops agreeing with the whole rendering. Tokens that lie wholly inside such a span are trained on, so the
end-of-turn marker the template writes after the reply (`<|im_end|>`, `<|eot_id|>`, `</s>`,
`<|end|>`) is learned too. Nothing depends on TRL knowing the template by heart.
"""

from __future__ import annotations

from lifecycle.errors import UserError


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def assistant_spans(tok, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    full = tok.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m.get("role") != "assistant":
            continue
        head = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        upto = tok.apply_chat_template(messages[: i + 1], tokenize=False)
        start = _common_prefix(head, full)
        end = _common_prefix(upto, full)
        if start != len(head) or end <= start:
            raise UserError("the chat template does not render a conversation as a prefix of its continuation "
                            "(assistant turn %d); its assistant tokens cannot be located" % (i + 1))
        spans.append((start, end))
    return full, spans


def _has_markers(tok) -> bool:
    template = getattr(tok, "chat_template", None) or ""
    return "{% generation %}" in template or "{%- generation %}" in template


def tokenize_chat(tok, messages: list[dict]) -> dict:
    """{"input_ids", "assistant_masks"} for one conversation (no truncation here)."""
    if _has_markers(tok):
        enc = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        return {"input_ids": list(enc["input_ids"]), "assistant_masks": list(enc["assistant_masks"])}
    text, spans = assistant_spans(tok, messages)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    # a token is trained on only if it lies wholly inside a turn: where two renderings part ways in the
    # middle of a token ("<|end|>\n<|user|>" vs "<|end|>\n<|endoftext|>" share "<|"), it belongs to the next
    mask = [int(any(s <= a and b <= e for s, e in spans) and b > a) for a, b in enc["offset_mapping"]]
    return {"input_ids": list(enc["input_ids"]), "assistant_masks": mask}


FOLDED = "system message folded into the first user turn (the chat template has no system role)"


def tokenize_chats(tok, records: list[dict], max_length: int) -> tuple[list[dict], dict[str, int]]:
    """Tokenized rows for every usable record, and counts by reason of records dropped or adjusted.

    A template that refuses a system message (Mistral's, Gemma's) gets it folded into the first user turn,
    counted under FOLDED. A record is dropped when the template still refuses it (e.g. roles that do not
    alternate) or when no assistant token survives truncation to `max_length`.
    """
    from jinja2.exceptions import TemplateError

    from lifecycle.data.generic import fold_system

    if not getattr(tok, "chat_template", None):
        raise UserError("the model's tokenizer has no chat template; add one (tokenizer_config.json "
                        "`chat_template` or chat_template.jinja) or train on raw text with `lifecycle pretrain`")
    rows: list[dict] = []
    dropped: dict[str, int] = {}
    for r in records:
        messages = r["messages"]
        try:
            try:
                row = tokenize_chat(tok, messages)
            except TemplateError:
                if not messages or messages[0].get("role") != "system":
                    raise
                row = tokenize_chat(tok, fold_system(messages))
                dropped[FOLDED] = dropped.get(FOLDED, 0) + 1
        except TemplateError as e:
            reason = f"dropped: chat template refused it: {e}"
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        if not any(row["assistant_masks"][:max_length]):
            reason = f"dropped: no assistant token within max_length {max_length}"
            dropped[reason] = dropped.get(reason, 0) + 1
            continue
        rows.append(row)
    if not rows:
        detail = "; ".join(f"{n} x {why}" for why, n in dropped.items() if why != FOLDED)
        raise UserError(f"no trainable chat records ({detail})")
    return rows, dropped
