"""Metric definitions, one each: exact match, ROUGE, BLEU, perplexity, classification scores.

Every score is in [0, 1] except perplexity. BLEU is sacrebleu's corpus BLEU divided by 100; ROUGE is the
rouge-score F-measure averaged over items (best reference per item). scikit-learn, rouge-score and
sacrebleu are imported on use, with an install hint when missing.
"""

from __future__ import annotations

import importlib.util
import math
import re
import string
from typing import Sequence

from lifecycle.errors import UserError

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def require(module: str) -> None:
    """Raise a one-line install hint when an optional library is missing (checked without importing)."""
    if importlib.util.find_spec(module) is None:
        from lifecycle.extras import install_hint

        raise UserError(f"this metric needs {module}: {install_hint(module)}")


def normalize(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD-style)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def _refs(ref: str | Sequence[str]) -> list[str]:
    return [ref] if isinstance(ref, str) else list(ref)


def exact_match(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Share of predictions equal to any of their references after `normalize`."""
    if not predictions:
        return 0.0
    hits = sum(any(normalize(p) == normalize(r) for r in _refs(ref)) for p, ref in zip(predictions, references))
    return hits / len(predictions)


def rouge(predictions: Sequence[str], references: Sequence[str | Sequence[str]],
          kinds: Sequence[str] = ("rouge1", "rouge2", "rougeL")) -> dict[str, float]:
    """Mean F-measure per ROUGE kind; with several references an item takes its best one."""
    require("rouge_score")
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=False)
    totals = {k: 0.0 for k in kinds}
    for pred, ref in zip(predictions, references):
        for k in kinds:
            totals[k] += max(scorer.score(r, pred)[k].fmeasure for r in _refs(ref))
    n = max(len(predictions), 1)
    return {k: v / n for k, v in totals.items()}


def bleu(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """sacrebleu corpus BLEU (default tokenizer and smoothing) on a 0-1 scale.

    BLEU counts up to 4-grams, so replies shorter than 4 tokens score 0 even when exact: use exact_match
    or ROUGE for short answers.
    """
    require("sacrebleu")
    import sacrebleu

    refs = [_refs(r) for r in references]
    width = max((len(r) for r in refs), default=1)
    # sacrebleu wants one stream per reference slot; items with fewer references repeat their first one.
    streams = [[r[i] if i < len(r) else r[0] for r in refs] for i in range(width)]
    return sacrebleu.corpus_bleu(list(predictions), streams).score / 100.0


def perplexity(logprobs: Sequence[float], num_tokens: Sequence[int]) -> float:
    """exp(-total log-likelihood / total tokens) over a corpus."""
    total = sum(num_tokens)
    if total == 0:
        raise UserError("perplexity needs at least one scored token")
    return math.exp(-sum(logprobs) / total)


def classification(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str],
                   probs: Sequence[Sequence[float]] | None = None) -> dict[str, float | None]:
    """Accuracy, F1 macro and micro over `labels`; AUC when `probs` (one row per item, in `labels` order).

    AUC is binary (positive = labels[1]) for two labels and one-vs-rest macro otherwise; it is None when
    y_true holds a single class, where AUC is undefined.
    """
    require("sklearn")
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    labels = list(labels)
    out: dict[str, float | None] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "f1_micro": float(f1_score(y_true, y_pred, labels=labels, average="micro", zero_division=0)),
        "auc": None,
    }
    if probs is not None and len(set(y_true)) > 1:
        if len(labels) == 2:
            out["auc"] = float(roc_auc_score([labels.index(y) for y in y_true], [p[1] for p in probs]))
        elif set(y_true) == set(labels):
            out["auc"] = float(roc_auc_score(y_true, [list(p) for p in probs], multi_class="ovr",
                                             labels=labels, average="macro"))
    return out


def softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and a Student-t confidence interval (lo, hi); a single value gives a zero-width interval."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    m = sum(values) / n
    if n == 1:
        return m, m, m
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    require("scipy")
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return m, m - half, m + half
