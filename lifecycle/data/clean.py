"""Cleaning: Unicode and whitespace normalisation, HTML to text and quality filters (PII: lifecycle.data.pii).

    text = normalise_text(raw)                      # NFKC, control chars, whitespace
    reason = quality_reason(text, rules)            # None, or "gopher_symbols", "repetition_lines", ...

The quality rules follow Gopher (Rae et al. 2021, appendix A): word-length, symbol, bullet and ellipsis
ratios, and duplicate line/paragraph/n-gram fractions. They judge prose, so they apply only to texts of at
least `min_words` words; short chat turns ("12+34=46") pass untouched.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_LINE_SEPS = re.compile("[\r\u2028\u2029\x85]\n?")
_TRAILING = re.compile(r"[ \t]+\n")
_BLANKS = re.compile(r"\n{3,}")
_HTML = re.compile(r"<(?:!doctype|html|head|body|p|div|br|span|a|ul|ol|li|h[1-6]|table|tr|td|b|i|em|strong|"
                   r"script|style|article|section)\b[^>]*>", re.I)
_HTML_DOC = re.compile(r"<(?:!doctype|html|body)\b", re.I)
_BLOCK_TAGS = {"p", "div", "br", "li", "ul", "ol", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6",
               "article", "section", "header", "footer", "blockquote", "pre"}


def normalise_text(text: str, nfkc: bool = True) -> str:
    """NFKC, no control or zero-width characters, LF line ends, no trailing spaces, at most one blank line."""
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    text = _LINE_SEPS.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = _TRAILING.sub("\n", text + "\n")
    return _BLANKS.sub("\n\n", text).strip()


def looks_like_html(text: str) -> bool:
    return _HTML.search(text) is not None


def html_to_text(html: str, document: bool | None = None) -> str:
    """Main text of an HTML page (trafilatura), or the visible text of a fragment (lxml)."""
    if document is None:
        document = _HTML_DOC.search(html) is not None
    if document:
        import trafilatura

        text = trafilatura.extract(html, include_comments=False, include_tables=True)
        if text:
            return text
    return _fragment_text(html)


def _fragment_text(html: str) -> str:
    import lxml.html

    try:
        root = lxml.html.fromstring(html)
    except Exception:  # lxml raises ParserError/ValueError on empty or odd markup
        return re.sub(r"<[^>]+>", " ", html)
    for bad in root.xpath("//script|//style|//noscript"):
        bad.drop_tree()
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.lower() in _BLOCK_TAGS:
            el.tail = "\n" + (el.tail or "")
    return root.text_content()


# ---- quality rules ---------------------------------------------------------------------------------------

@dataclass
class QualityRules:
    """Thresholds (Gopher's defaults); `min_words` is the length from which they apply."""

    min_words: int = 50
    word_length: tuple[float, float] = (3.0, 10.0)
    max_symbol_ratio: float = 0.1
    max_bullet_lines: float = 0.9
    max_ellipsis_lines: float = 0.3
    min_alpha_words: float = 0.8
    max_dup_lines: float = 0.3
    max_dup_line_chars: float = 0.2
    max_dup_paragraphs: float = 0.3
    top_ngram: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16))
    dup_ngram: tuple[tuple[int, float], ...] = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11),
                                                 (10, 0.10))
    boilerplate_max_lines: float = 0.5


BOILERPLATE = re.compile(r"lorem ipsum|javascript (?:is )?(?:disabled|required)|enable javascript|"
                         r"accept (?:all )?cookies|this (?:site|website) uses cookies|all rights reserved|"
                         r"terms of (?:use|service)|privacy policy|click here|sign up for our newsletter|"
                         r"skip to (?:main )?content", re.I)
# Cheap substring checks first: the regex above is slow to scan a long text, and most texts hold none of these.
BOILERPLATE_KEYS = ("javascript", "cookies", "rights reserved", "terms of", "privacy policy", "click here",
                    "newsletter", "skip to")
_BULLET = re.compile(r"^\s*(?:[-*\u2022\u2023\u25e6\u2043\u2219]|\d+[.)])\s")
_ELLIPSIS = ("...", "\u2026")
_ALPHA_WORD = re.compile(r"(?<!\S)\S*?[^\W\d_]\S*")  # a whitespace-separated word holding a letter


def _dup_fraction(parts: list[str]) -> tuple[float, float]:
    """(fraction of items that repeat an earlier one, fraction of characters in those repeats)."""
    parts = [p for p in parts if p.strip()]
    if not parts:
        return 0.0, 0.0
    seen: set[str] = set()
    dup_n = dup_chars = 0
    for p in parts:
        if p in seen:
            dup_n += 1
            dup_chars += len(p)
        seen.add(p)
    return dup_n / len(parts), dup_chars / max(1, sum(len(p) for p in parts))


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(words[i:] for i in range(n))))


def _top_ngram_fraction(words: list[str], n: int, total: int) -> float:
    """Characters in the most frequent n-gram, times its count, over all word characters (Gopher)."""
    grams = Counter(_ngrams(words, n))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    return 0.0 if count < 2 else count * sum(len(w) for w in gram) / max(1, total)


def _dup_ngram_fraction(words: list[str], n: int, total: int) -> float:
    """Fraction of word characters covered by n-grams that occur more than once (Gopher)."""
    grams = _ngrams(words, n)
    counts = Counter(grams)
    if len(counts) == len(grams):
        return 0.0
    covered = [False] * len(words)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i:i + n] = [True] * n
    return sum(len(w) for w, c in zip(words, covered) if c) / max(1, total)


def quality_reason(text: str, rules: QualityRules) -> str | None:
    """The first Gopher-style rule the text breaks, or None (also None when it is shorter than min_words)."""
    words = text.split()
    if len(words) < rules.min_words:
        return None
    lines = text.split("\n")
    nonblank = [ln for ln in lines if ln.strip()]
    lowered_text = text.lower()
    if "lorem ipsum" in lowered_text or (any(k in lowered_text for k in BOILERPLATE_KEYS) and sum(
            bool(BOILERPLATE.search(ln)) for ln in nonblank) / len(nonblank) > rules.boilerplate_max_lines):
        return "boilerplate"
    total = len("".join(words))
    mean_len = total / len(words)
    if not rules.word_length[0] <= mean_len <= rules.word_length[1]:
        return "gopher_word_length"
    symbols = text.count("#") + sum(text.count(e) for e in _ELLIPSIS)
    if symbols / len(words) > rules.max_symbol_ratio:
        return "gopher_symbols"
    if nonblank and sum(bool(_BULLET.match(ln)) for ln in nonblank) / len(nonblank) > rules.max_bullet_lines:
        return "gopher_bullets"
    if nonblank and sum(ln.rstrip().endswith(_ELLIPSIS) for ln in nonblank) / len(nonblank) > rules.max_ellipsis_lines:
        return "gopher_ellipsis"
    if len(_ALPHA_WORD.findall(text)) / len(words) < rules.min_alpha_words:
        return "gopher_alpha"
    line_frac, line_chars = _dup_fraction(lines)
    if line_frac > rules.max_dup_lines or line_chars > rules.max_dup_line_chars:
        return "repetition_lines"
    para_frac, _ = _dup_fraction(re.split(r"\n\s*\n", text))
    if para_frac > rules.max_dup_paragraphs:
        return "repetition_paragraphs"
    lowered = lowered_text.split()
    for n, limit in rules.top_ngram:
        if _top_ngram_fraction(lowered, n, total) > limit:
            return "repetition_top_ngram"
    # Coverage by repeated n-grams can only shrink as n grows, so the smallest n bounds the rest.
    floor = min((limit for _, limit in rules.dup_ngram), default=1.0)
    for n, limit in sorted(rules.dup_ngram):
        frac = _dup_ngram_fraction(lowered, n, total)
        if frac > limit:
            return "repetition_dup_ngram"
        if frac <= floor:
            break
    return None


# ---- language --------------------------------------------------------------------------------------------

class LanguageId:
    """Language identification with py3langid (optional; install it to use `languages`)."""

    def __init__(self, languages: list[str]):
        from lifecycle.errors import UserError
        from lifecycle.extras import install_hint

        try:
            from py3langid import langid
        except ImportError:
            raise UserError(f"the language filter needs py3langid: {install_hint('py3langid')}; "
                            "or leave `languages` empty") from None
        self._ident = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)
        known = set(self._ident.nb_classes)
        unknown = [lang for lang in languages if lang not in known]
        if unknown:
            raise UserError(f"unknown language code(s) {', '.join(unknown)}; use ISO 639-1 codes like en, de, fr")
        self.languages = set(languages)

    def classify(self, text: str) -> tuple[str, float]:
        lang, prob = self._ident.classify(text)
        return lang, float(prob)
