"""Record formats: detect alpaca, sharegpt, OpenAI messages, preference and plain text, and normalise them.

Normalised records (the contract with the training stages):
- chat (alpaca, sharegpt, messages): {"messages": [{"role", "content"}, ...]};
- preference: {"prompt": str | messages, "chosen": str | messages, "rejected": str | messages};
- text: {"text": str}.

    fmt = detect([obj, ...])           # "alpaca" | "sharegpt" | "messages" | "preference" | "text" | None
    rec = normalise(obj, fmt)          # raises FormatError("what is wrong") for a record that does not fit
"""

from __future__ import annotations

from typing import Any, Callable

FORMATS = ("alpaca", "sharegpt", "messages", "preference", "text")
KIND = {"alpaca": "chat", "sharegpt": "chat", "messages": "chat", "preference": "preference", "text": "text"}
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "model": "assistant",
                  "system": "system", "tool": "tool", "function": "tool", "observation": "tool"}
TEXT_KEYS = ("text", "content", "body")


class FormatError(ValueError):
    """A record that does not fit its format; the message says what is wrong."""


def _looks(obj: Any, fmt: str) -> bool:
    if isinstance(obj, str):
        return fmt == "text"
    if not isinstance(obj, dict):
        return False
    if fmt == "preference":
        return "chosen" in obj and "rejected" in obj
    if fmt == "messages":
        return isinstance(obj.get("messages"), list)
    if fmt == "sharegpt":
        return isinstance(obj.get("conversations"), list)
    if fmt == "alpaca":
        return "instruction" in obj and "output" in obj
    return any(isinstance(obj.get(k), str) for k in TEXT_KEYS)


def detect_one(obj: Any) -> str | None:
    """The first format whose shape the object has (preference before chat, chat before text)."""
    for fmt in ("preference", "messages", "sharegpt", "alpaca", "text"):
        if _looks(obj, fmt):
            return fmt
    return None


def detect(sample: list[Any]) -> str | None:
    """The most common format among a sample of parsed objects, or None when none fits."""
    counts: dict[str, int] = {}
    for obj in sample:
        fmt = detect_one(obj)
        if fmt:
            counts[fmt] = counts.get(fmt, 0) + 1
    return max(counts, key=counts.get) if counts else None


def _str(obj: dict, key: str, required: bool = True) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise FormatError(f"missing field '{key}'")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise FormatError(f"field '{key}' must be a string, got {type(value).__name__}")
    return value


def _messages(value: Any, where: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise FormatError(f"'{where}' must be a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise FormatError(f"{where}[{i}] is not an object")
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or role not in ROLES:
            raise FormatError(f"{where}[{i}] has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise FormatError(f"{where}[{i}] content must be a string")
        out.append({"role": role, "content": content})
    return out


def _alpaca(obj: dict) -> dict:
    instruction, extra, output = _str(obj, "instruction"), _str(obj, "input", False), _str(obj, "output")
    messages = []
    if obj.get("system"):
        messages.append({"role": "system", "content": _str(obj, "system")})
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return {"messages": messages}


def _sharegpt(obj: dict) -> dict:
    turns = obj.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise FormatError("'conversations' must be a non-empty list")
    messages = []
    if isinstance(obj.get("system"), str) and obj["system"]:
        messages.append({"role": "system", "content": obj["system"]})
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise FormatError(f"conversations[{i}] is not an object")
        who, value = t.get("from"), t.get("value")
        if not isinstance(who, str) or who not in SHAREGPT_ROLES:
            raise FormatError(f"conversations[{i}] has from={who!r}; expected human, gpt or system")
        if not isinstance(value, str):
            raise FormatError(f"conversations[{i}] value must be a string")
        messages.append({"role": SHAREGPT_ROLES[who], "content": value})
    return {"messages": messages}


def _chat(obj: dict) -> dict:
    return {"messages": _messages(obj.get("messages"), "messages")}


def _side(obj: dict, key: str, role: str) -> str | list[dict]:
    if key not in obj:
        raise FormatError(f"missing field '{key}'")
    value = obj[key]
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and role == "assistant":
        value = [value]
    return _messages(value, key)


def _preference(obj: dict) -> dict:
    prompt = _side(obj, "prompt", "user") if "prompt" in obj else None
    chosen, rejected = _side(obj, "chosen", "assistant"), _side(obj, "rejected", "assistant")
    if prompt is None:
        # Implicit prompt: the shared leading messages of chosen and rejected (TRL's convention).
        if isinstance(chosen, str) or isinstance(rejected, str):
            raise FormatError("missing field 'prompt'")
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
            n += 1
        if n == 0:
            raise FormatError("missing field 'prompt' and chosen/rejected share no leading messages")
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
    if chosen == rejected:
        raise FormatError("'chosen' and 'rejected' are identical")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _text(obj: Any) -> dict:
    if isinstance(obj, str):
        return {"text": obj}
    if not isinstance(obj, dict):
        raise FormatError(f"expected a string or an object with a text field, got {type(obj).__name__}")
    for k in TEXT_KEYS:
        if isinstance(obj.get(k), str):
            return {"text": obj[k]}
    raise FormatError(f"no text field (one of {', '.join(TEXT_KEYS)})")


NORMALISERS: dict[str, Callable[[Any], dict]] = {
    "alpaca": _alpaca, "sharegpt": _sharegpt, "messages": _chat, "preference": _preference, "text": _text,
}


def normalise(obj: Any, fmt: str) -> dict:
    """One parsed object in format `fmt` -> its normalised record, or FormatError."""
    if fmt != "text" and not isinstance(obj, dict):
        raise FormatError(f"expected a JSON object for {fmt}, got {type(obj).__name__}")
    return NORMALISERS[fmt](obj)


def as_messages(value: str | list[dict], role: str) -> list[dict]:
    return [{"role": role, "content": value}] if isinstance(value, str) else value


def is_conversational(rec: dict) -> bool:
    return any(isinstance(rec.get(k), list) for k in ("prompt", "chosen", "rejected"))


def to_conversational(rec: dict) -> dict:
    """A preference record with prompt, chosen and rejected all as message lists."""
    return {**rec, "prompt": as_messages(rec["prompt"], "user"), "chosen": as_messages(rec["chosen"], "assistant"),
            "rejected": as_messages(rec["rejected"], "assistant")}


def unify_preference(records: list[dict]) -> None:
    """Make every preference record conversational if any is, so the dataset has one column type."""
    if any(is_conversational(r) for r in records):
        records[:] = [to_conversational(r) for r in records]


def texts(rec: dict) -> list[str]:
    """Every string of content in a normalised record, in order."""
    if "text" in rec:
        return [rec["text"]]
    if "messages" in rec:
        return [m["content"] for m in rec["messages"]]
    out = []
    for k in ("prompt", "chosen", "rejected"):
        v = rec[k]
        out += [v] if isinstance(v, str) else [m["content"] for m in v]
    return out


def map_texts(rec: dict, fn: Callable[[str], str]) -> dict:
    """A copy of a normalised record with `fn` applied to every content string."""
    if "text" in rec:
        return {**rec, "text": fn(rec["text"])}
    if "messages" in rec:
        return {**rec, "messages": [{**m, "content": fn(m["content"])} for m in rec["messages"]]}
    out = dict(rec)
    for k in ("prompt", "chosen", "rejected"):
        v = rec[k]
        out[k] = fn(v) if isinstance(v, str) else [{**m, "content": fn(m["content"])} for m in v]
    return out


def joined(rec: dict) -> str:
    """The record's text as one string (for length filters, dedup and language id)."""
    return "\n".join(texts(rec))
