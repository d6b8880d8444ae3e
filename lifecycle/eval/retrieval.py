"""Retrieval recall@k: rank a corpus for each query with a pluggable scorer, count relevant ids in the top k.

Items are {"query", "relevant": [doc ids]}; the corpus is JSONL {"id", "text"}. A scorer is any
callable `(query, docs) -> scores` (higher is better). The default `EngineScorer` uses the Engine's
`score`: the log-likelihood of the document after the query. Options: `corpus` (path), `k` (list, default
[1, 5]), `scorer` (engine | overlap | module:function), `query_template` (default "{query}"),
`length_normalize` (engine scorer: mean log-prob per token), `doc_suffix` (engine scorer: text scored after
each document, e.g. "\n" so that a document that is a prefix of another is not favoured). Metrics: `recall@K` and `mrr`.
recall@k for one query = |relevant in top k| / |relevant|, averaged over queries.
"""

from __future__ import annotations

import importlib
from typing import Callable, Sequence

from lifecycle.engine import Engine
from lifecycle.errors import UserError
from lifecycle.data.load import read_jsonl
from lifecycle.eval.tasks import Task

Scorer = Callable[[str, Sequence[str]], Sequence[float]]


class EngineScorer:
    """Score documents by log P(doc | query) through any Engine."""

    def __init__(self, engine: Engine, template: str = "{query}", length_normalize: bool = False,
                 doc_suffix: str = ""):
        self.engine, self.template, self.norm, self.suffix = engine, template, length_normalize, doc_suffix

    def __call__(self, query: str, docs: Sequence[str]) -> list[float]:
        ctx = self.template.format(query=query)
        scores = self.engine.score([(ctx, d + self.suffix) for d in docs])
        return [s.logprob / max(s.num_tokens, 1) if self.norm else s.logprob for s in scores]


def overlap_scorer(query: str, docs: Sequence[str]) -> list[float]:
    """Share of the query's words found in each document (a model-free baseline)."""
    q = set(query.lower().split())
    return [len(q & set(d.lower().split())) / max(len(q), 1) for d in docs]


def rank(query: str, corpus: Sequence[dict], scorer: Scorer) -> list[str]:
    scores = scorer(query, [d["text"] for d in corpus])
    if len(scores) != len(corpus):
        raise UserError(f"the retrieval scorer returned {len(scores)} scores for {len(corpus)} documents")
    order = sorted(range(len(corpus)), key=lambda i: (-scores[i], i))  # ties keep corpus order
    return [str(corpus[i]["id"]) for i in order]


def recall_at_k(queries: Sequence[dict], corpus: Sequence[dict], scorer: Scorer,
                ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Mean recall@k for each k, and mean reciprocal rank of the first relevant document."""
    totals = {k: 0.0 for k in ks}
    mrr = 0.0
    for q in queries:
        relevant = {str(r) for r in q["relevant"]}
        if not relevant:
            raise UserError(f"query {q['query']!r} lists no relevant ids")
        ranked = rank(q["query"], corpus, scorer)
        for k in ks:
            totals[k] += len(relevant & set(ranked[:k])) / len(relevant)
        first = next((i for i, d in enumerate(ranked) if d in relevant), None)
        mrr += 0.0 if first is None else 1.0 / (first + 1)
    n = max(len(queries), 1)
    out = {f"recall@{k}": v / n for k, v in totals.items()}
    out["mrr"] = mrr / n
    return out


def make_scorer(spec: str, engine: Engine, task: Task) -> Scorer:
    if spec == "engine":
        return EngineScorer(engine, task.opt("query_template", "{query}"), bool(task.opt("length_normalize", False)),
                            str(task.opt("doc_suffix", "")))
    if spec == "overlap":
        return overlap_scorer
    if ":" in spec:
        module, name = spec.split(":", 1)
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise UserError(f"task '{task.name}': cannot import scorer {spec!r} ({e})") from None
        return factory
    raise UserError(f"task '{task.name}': scorer must be engine, overlap or module:function, got {spec!r}")


def run(task: Task, engine: Engine, ctx) -> dict:
    queries = task.items()
    corpus = read_jsonl(task.path("corpus"))
    ids = [str(d.get("id")) for d in corpus]
    if any("text" not in d or "id" not in d for d in corpus) or len(set(ids)) != len(ids):
        raise UserError(f"task '{task.name}': corpus records need unique 'id' and a 'text'")
    missing = {str(r) for q in queries for r in q.get("relevant", [])} - set(ids)
    if missing:
        raise UserError(f"task '{task.name}': relevant ids not in the corpus: {sorted(missing)[:5]}")
    scorer = make_scorer(str(task.opt("scorer", "engine")), engine, task)
    result = recall_at_k(queries, corpus, scorer, [int(k) for k in task.opt("k", [1, 5])])
    result["n"] = len(queries)
    return {"metrics": result, "samples": []}
