"""PII redaction that leaves ordinary numbers alone: each kind has a shape, and a checksum or context where
its format has one.

    text, counts = redact_pii("call (212) 555-0123, card 4111 1111 1111 1111")
    # "call [PHONE], card [CARD]", Counter({"PHONE": 1, "CARD": 1})
    spans = find_pii(text)   # [(start, end, kind), ...] without overlaps, for measuring

| kind  | shape | check |
|---|---|---|
| EMAIL | name@domain.tld | - |
| IP    | dotted IPv4, IPv6 with at least one digit | - |
| CARD  | 13-19 digits, spaces or dashes between | Luhn (python-stdnum) and a card-network prefix |
| IBAN  | two letters, two digits, 11-30 letters/digits | ISO 13616 mod-97 and per-country length (python-stdnum) |
| SSN   | 123-45-6789, or 9 digits after "SSN"/"social security" | area, group and serial rules (python-stdnum) |
| PHONE | +CC numbers; (212) 555-0123, 212-555-0123; 0-trunk national numbers of 10+ digits with separators; bare digits only after "tel"/"phone"/"call"... | a possible length for its country (+CC, NANP) or a valid number in one of `PHONE_REGIONS` (national; libphonenumber's data via phonenumbers) |

A run of digits with no separators and no context (an order number, a timestamp, a count) is never
redacted: the old rule that took any 9+ digits did, which is what `benchmarks/pii_eval.py` measures.
"""

from __future__ import annotations

import re
from collections import Counter

PHONE_REGIONS = ("GB", "DE", "FR", "IT", "ES", "NL", "AU", "IN")  # national (0-trunk) formats tried in order

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w.]|\.\d)")
IPV6 = re.compile(r"(?<![\w:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|"
                  r"(?:[0-9A-Fa-f]{1,4}:){1,7}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?|"
                  r"::[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})(?![\w:])")
CARD = re.compile(r"(?<![\w.,+-])\d(?:[ -]?\d){12,18}(?![\w-]|[.,]\d)")
CARD_PREFIX = re.compile(r"4|5[1-5]|2[2-7]|3[0345678]|6[0245]")  # Visa, Mastercard, Amex, Diners, JCB, Discover, UnionPay
IBAN = re.compile(r"(?<![\w-])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}(?![\w-])")
SSN = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")
SSN_CONTEXT = re.compile(r"(?i:\bssn|social security(?: number| no\.?)?)\W{0,5}(\d{9})(?!\w)")
PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    r"\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){1,4}"  # +44 20 7946 0958
    r"|(?:1[\s.-])?\(\d{3}\)\s?\d{3}[\s.-]\d{4}"                              # (212) 555-0123
    r"|(?:1[\s.-])?\d{3}[.-]\d{3}[.-]\d{4}"                                   # 212-555-0123
    r"|0\d{1,4}(?:[\s/-]\d{2,8}){1,4}"                                        # 020 7946 0958, 030/1234567
    r")(?![\w-]|[.,]\d)")
PHONE_CONTEXT = re.compile(r"(?i:\b(?:tel|phone|call|mobile|cell|fax|whatsapp|ph)\b\.?:?\s{0,3})(\+?\d{10,12})(?!\w)")

Span = tuple[int, int, str]


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _card(s: str) -> bool:
    from stdnum import luhn

    d = _digits(s)
    return 13 <= len(d) <= 19 and CARD_PREFIX.match(d) is not None and luhn.is_valid(d)


def _iban(m: re.Match) -> tuple[int, int] | None:
    """The longest run of the match's groups that is a valid IBAN (the regex may take a word too many)."""
    from stdnum import iban

    parts = m.group(0).split(" ")
    for n in range(len(parts), 0, -1):
        candidate = " ".join(parts[:n])
        if iban.is_valid(candidate):
            return m.start(), m.start() + len(candidate)
    return None


def _ssn(s: str) -> bool:
    from stdnum.us import ssn

    return ssn.is_valid(s)


def _phone(s: str) -> bool:
    import phonenumbers as pn

    d = _digits(s)
    if not 7 <= len(d) <= 15:
        return False
    try:
        if s.lstrip().startswith("+"):
            return pn.is_possible_number(pn.parse(s, None))
        if not s.startswith("0"):  # NANP shapes and bare digits after a phone word
            return pn.is_possible_number(pn.parse(s, "US"))
        # National numbers: 10+ digits (shorter 0-led groups are catalogue numbers and sizes more often)
        return len(d) >= 10 and any(pn.is_valid_number(pn.parse(s, region)) for region in PHONE_REGIONS)
    except pn.NumberParseException:
        return False


def find_pii(text: str) -> list[Span]:
    """(start, end, kind) of every PII span, first kind wins where two overlap, in text order."""
    found: list[Span] = []

    def free(a: int, b: int) -> bool:
        return all(b <= s or a >= e for s, e, _ in found)

    def add(a: int, b: int, kind: str) -> None:
        if free(a, b):
            found.append((a, b, kind))

    for m in EMAIL.finditer(text):
        add(m.start(), m.end(), "EMAIL")
    if not any(c.isdigit() for c in text):
        return sorted(found)
    for m in IPV4.finditer(text):
        add(m.start(), m.end(), "IP")
    if ":" in text:
        for m in IPV6.finditer(text):
            if any(c.isdigit() for c in m.group(0)):  # "a::b" in C++ is not an address
                add(m.start(), m.end(), "IP")
    for m in IBAN.finditer(text):
        span = _iban(m)
        if span:
            add(*span, "IBAN")
    for m in CARD.finditer(text):
        if _card(m.group(0)):
            add(m.start(), m.end(), "CARD")
    for m in SSN.finditer(text):
        if _ssn(m.group(0)):
            add(m.start(), m.end(), "SSN")
    for m in SSN_CONTEXT.finditer(text):
        if _ssn(m.group(1)):
            add(m.start(1), m.end(1), "SSN")
    for m in PHONE.finditer(text):
        if _phone(m.group(0)):
            add(m.start(), m.end(), "PHONE")
    for m in PHONE_CONTEXT.finditer(text):
        if _phone(m.group(1)):
            add(m.start(1), m.end(1), "PHONE")
    return sorted(found)


def redact_pii(text: str) -> tuple[str, Counter]:
    """The text with each PII span replaced by [KIND], and the count per kind."""
    spans = find_pii(text)
    counts: Counter = Counter(kind for _, _, kind in spans)
    for a, b, kind in reversed(spans):
        text = text[:a] + f"[{kind}]" + text[b:]
    return text, counts
