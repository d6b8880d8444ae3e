"""Generation tasks (exact match, ROUGE, BLEU against references) and perplexity over a text set.

generate options: `reference` (item field, str or list; default "reference"), `extract` (none | last_int
| first_line | regex:PATTERN, applied to the reply before comparing), `metrics` (any of exact_match,
rouge, bleu, verbose_rate), `max_tokens`, `stop`.
perplexity options: `field` (item text field, default "text"), `context_field` (optional prefix that is
conditioned on but not scored).
"""

from __future__ import annotations

import re

from lifecycle.engine import Engine, SamplingParams
from lifecycle.errors import UserError
from lifecycle.eval import metrics as M
from lifecycle.eval.tasks import Task

GEN_METRICS = ("exact_match", "rouge", "bleu", "verbose_rate")


def extract(text: str, how: str) -> str:
    """Pull the answer out of a reply before it is compared with the reference."""
    if how in ("none", "", None):
        return text.strip()
    if how == "last_int":
        found = re.findall(r"-?\d+", text)
        return found[-1] if found else ""
    if how == "first_line":
        return text.strip().split("\n", 1)[0].strip()
    if how.startswith("regex:"):
        m = re.search(how[len("regex:"):], text)
        return (m.group(1) if m and m.groups() else m.group(0) if m else "").strip()
    raise UserError(f"unknown extract {how!r}; use none, last_int, first_line or regex:PATTERN")


def params_for(task: Task, default_tokens: int = 32) -> SamplingParams:
    stop = task.opt("stop", [])
    return SamplingParams(max_tokens=int(task.opt("max_tokens", default_tokens)), temperature=0.0,
                          stop=[stop] if isinstance(stop, str) else list(stop))


def run_generate(task: Task, engine: Engine, ctx) -> dict:
    items = task.items()
    wanted = task.opt("metrics", ["exact_match"])
    bad = [m for m in wanted if m not in GEN_METRICS]
    if bad:
        raise UserError(f"task '{task.name}': unknown metric(s) {bad}; known: {', '.join(GEN_METRICS)}")
    ref_field = task.opt("reference", "reference")
    if any(ref_field not in it for it in items):
        raise UserError(f"task '{task.name}': every item needs a '{ref_field}' field")
    outs = engine.generate([task.prompt(it) for it in items], params_for(task))
    replies = [o.text for o in outs]
    preds = [extract(r, task.opt("extract", "none")) for r in replies]
    refs = [it[ref_field] if isinstance(it[ref_field], list) else str(it[ref_field]) for it in items]
    result: dict = {"n": len(items)}
    if "exact_match" in wanted:
        result["exact_match"] = M.exact_match(preds, refs)
    if "rouge" in wanted:
        result.update(M.rouge(preds, refs))
    if "bleu" in wanted:
        result["bleu"] = M.bleu(preds, refs)
    if "verbose_rate" in wanted:
        result["verbose_rate"] = sum(re.fullmatch(r"-?\d+", r.strip()) is None for r in replies) / len(replies)
    samples = [{"prompt": _show(task.prompt(it)), "reply": r, "reference": ref}
               for it, r, ref in zip(items[:5], replies[:5], refs[:5])]
    return {"metrics": result, "samples": samples, "outputs": replies}


def run_perplexity(task: Task, engine: Engine, ctx) -> dict:
    items = task.items()
    fld, cfld = task.opt("field", "text"), task.opt("context_field")
    if any(fld not in it for it in items):
        raise UserError(f"task '{task.name}': every item needs a '{fld}' field")
    scores = engine.score([(str(it.get(cfld, "")) if cfld else "", str(it[fld])) for it in items])
    lps = [s.logprob for s in scores]
    toks = [s.num_tokens for s in scores]
    ppl = M.perplexity(lps, toks)
    return {"metrics": {"perplexity": ppl, "nll_per_token": -sum(lps) / sum(toks), "tokens": sum(toks),
                        "n": len(items)}, "samples": []}


def _show(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]
