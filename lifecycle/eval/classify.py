"""Classification: accuracy, F1 (macro, micro) and AUC, with the label read from scored options or a reply.

Options: `labels` (a list, or a mapping label -> verbalizer text that is scored or looked for),
`mode` (score: the label whose verbalizer is most likely after the prompt, with softmax probabilities
for AUC; generate: the label whose verbalizer the reply starts with, else contains), `label_field`
(default "label"), `max_tokens` (generate mode).
"""

from __future__ import annotations

from lifecycle.engine import Engine
from lifecycle.errors import UserError
from lifecycle.eval import metrics as M
from lifecycle.eval.generation import params_for
from lifecycle.eval.tasks import Task, as_text

NO_LABEL = "<none>"


def verbalizers(task: Task) -> dict[str, str]:
    labels = task.opt("labels")
    if isinstance(labels, list) and labels:
        return {str(x): str(x) for x in labels}
    if isinstance(labels, dict) and labels:
        return {str(k): str(v) for k, v in labels.items()}
    raise UserError(f"task '{task.name}' needs 'labels': a list or a mapping label -> verbalizer")


def label_from_reply(reply: str, verbal: dict[str, str]) -> str:
    """The label whose verbalizer the normalised reply starts with; else the first one it contains."""
    text = M.normalize(reply)
    for label, v in verbal.items():
        if text.startswith(M.normalize(v)):
            return label
    hits = [(text.find(M.normalize(v)), label) for label, v in verbal.items() if M.normalize(v) in text]
    return min(hits)[1] if hits else NO_LABEL


def run(task: Task, engine: Engine, ctx) -> dict:
    items = task.items()
    verbal = verbalizers(task)
    labels = list(verbal)
    field = task.opt("label_field", "label")
    y_true = [str(it.get(field)) for it in items]
    unknown = sorted(set(y_true) - set(labels))
    if unknown:
        raise UserError(f"task '{task.name}': item labels {unknown} are not in labels {labels}")
    mode = task.opt("mode", "score")
    probs = None
    if mode == "score":
        contexts = [as_text(engine, task.prompt(it)) for it in items]
        scores = engine.score([(c, verbal[lab]) for c in contexts for lab in labels])
        k = len(labels)
        rows = [[s.logprob for s in scores[i * k:(i + 1) * k]] for i in range(len(items))]
        probs = [M.softmax(r) for r in rows]
        y_pred = [labels[max(range(k), key=r.__getitem__)] for r in rows]
        replies = [None] * len(items)
    elif mode == "generate":
        outs = engine.generate([task.prompt(it) for it in items], params_for(task, 8))
        replies = [o.text for o in outs]
        y_pred = [label_from_reply(r, verbal) for r in replies]
    else:
        raise UserError(f"task '{task.name}': mode must be score or generate, got {mode!r}")
    result = M.classification(y_true, y_pred, labels, probs)
    result["n"] = len(items)
    samples = [{"label": t, "predicted": p, "reply": r} for t, p, r in zip(y_true[:5], y_pred[:5], replies[:5])]
    return {"metrics": result, "samples": samples}
