"""Preference win rate: the candidate's replies against the baseline's (or the items' references), judged.

A judge is any callable `(prompt, a, b, reference) -> "a" | "b" | "tie"`. Built-ins, named by the task's
`judge` option (or `--judge-endpoint` on the CLI):
- `rule:concise-correct`: prefers the reply whose last integer equals the reference, then the shorter
  (bare-number) reply: the built-in task's style preference, judged by code;
- `endpoint`: a chat model at `judge_url` asked which reply is better, in both orders (a disagreement
  between the two orders counts as a tie, which cancels position bias);
- `reward-model:PATH`: a `reward` artifact from `lifecycle reward` scores both replies; the higher wins;
- `module:function`: any importable judge callable.
Metrics: `win_rate` = (wins + ties / 2) / n, and `tie_rate`, `loss_rate`.
"""

from __future__ import annotations

import importlib
import re
from typing import Callable

from lifecycle.engine import Engine, SamplingParams
from lifecycle.errors import UserError
from lifecycle.eval.generation import params_for
from lifecycle.eval.tasks import Task

Judge = Callable[[str, str, str, "str | None"], str]

JUDGE_PROMPT = (
    "Which response answers the user's request better (correct, helpful, concise, safe)?\n\n"
    "Request:\n{prompt}\n\nResponse A:\n{a}\n\nResponse B:\n{b}\n\n"
    "Reply with exactly one letter: A or B (or TIE if they are equally good)."
)


def concise_correct(prompt: str, a: str, b: str, reference: str | None = None) -> str:
    """Correct beats wrong; among equally correct replies the bare number beats the wordy one."""
    def key(reply: str) -> tuple[int, int]:
        found = re.findall(r"-?\d+", reply)
        correct = int(reference is not None and bool(found) and found[-1] == str(reference).strip())
        concise = int(re.fullmatch(r"\s*-?\d+\s*", reply) is not None)
        return correct, concise

    ka, kb = key(a), key(b)
    return "a" if ka > kb else "b" if kb > ka else "tie"


def parse_verdict(text: str) -> str:
    """The judge's first A / B / TIE word; anything else is a tie."""
    m = re.search(r"\b(TIE|A|B)\b", text.upper())
    return {"A": "a", "B": "b"}.get(m.group(1), "tie") if m else "tie"


class EndpointJudge:
    """Ask a chat model at an OpenAI-compatible endpoint, in both orders."""

    def __init__(self, url: str, model: str | None = None, engine: Engine | None = None):
        from lifecycle.eval.endpoint import EndpointEngine

        self.engine = engine or EndpointEngine(url, model)

    def __call__(self, prompt: str, a: str, b: str, reference: str | None = None) -> str:
        chats = [[{"role": "user", "content": JUDGE_PROMPT.format(prompt=prompt, a=x, b=y)}] for x, y in ((a, b), (b, a))]
        first, second = (parse_verdict(o.text) for o in self.engine.generate(chats, SamplingParams(max_tokens=8)))
        second = {"a": "b", "b": "a"}.get(second, "tie")
        return first if first == second else "tie"


class RewardModelJudge:
    """Score both replies with a learned reward model; a difference under `margin` is a tie."""

    def __init__(self, path: str, margin: float = 1e-4):
        from lifecycle.align.reward import load_reward_model
        from lifecycle.models import resolve

        self.model, self.tok = load_reward_model(resolve(path))
        self.margin = margin

    def __call__(self, prompt: str, a: str, b: str, reference: str | None = None) -> str:
        from lifecycle.align.reward import score

        chat = [{"role": "user", "content": prompt}]
        sa, sb = score(self.model, self.tok, [chat, chat], [[{"role": "assistant", "content": r}] for r in (a, b)])
        return "a" if sa > sb + self.margin else "b" if sb > sa + self.margin else "tie"


def make_judge(spec: str, url: str | None = None, model: str | None = None) -> Judge:
    if spec == "rule:concise-correct":
        return concise_correct
    if spec == "endpoint":
        if not url:
            raise UserError("judge: endpoint needs a URL: set judge_url on the task or pass --judge-endpoint")
        return EndpointJudge(url, model)
    if spec.startswith("reward-model"):
        path = spec.partition(":")[2]
        if not path:
            raise UserError("judge reward-model needs a path: reward-model:runs/rm (made by `lifecycle reward`)")
        return RewardModelJudge(path)
    if ":" in spec:
        module, name = spec.split(":", 1)
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise UserError(f"cannot import judge {spec!r} ({e})") from None
    raise UserError(f"unknown judge {spec!r}; use rule:concise-correct, endpoint, or module:function")


def win_rate(verdicts: list[str]) -> dict:
    """Verdicts are from the candidate's side ("a" = candidate wins)."""
    n = len(verdicts)
    if n == 0:
        raise UserError("no verdicts to aggregate")
    wins, ties = verdicts.count("a"), verdicts.count("tie")
    return {"win_rate": (wins + ties / 2) / n, "tie_rate": ties / n, "loss_rate": verdicts.count("b") / n, "n": n}


def run(task: Task, engine: Engine, ctx) -> dict:
    items = task.items()
    prompts = [task.prompt(it) for it in items]
    params = params_for(task, 32)
    replies = [o.text for o in engine.generate(prompts, params)]
    ref_field = task.opt("reference", "reference")
    if ctx is not None and ctx.baseline_outputs.get(task.name) is not None:
        others, against = ctx.baseline_outputs[task.name], "baseline"
    elif ctx is not None and ctx.baseline_engine is not None:
        others, against = [o.text for o in ctx.baseline_engine.generate(prompts, params)], "baseline"
    elif all(ref_field in it for it in items):
        others, against = [str(it[ref_field]) for it in items], "reference"
    else:
        raise UserError(f"task '{task.name}' needs a baseline (--baseline) or a '{ref_field}' on every item")
    judge_spec = (getattr(ctx, "judge_endpoint", None) and "endpoint") or task.opt("judge", "rule:concise-correct")
    judge = make_judge(judge_spec, getattr(ctx, "judge_endpoint", None) or task.opt("judge_url"),
                       getattr(ctx, "judge_model", None) or task.opt("judge_model"))
    answer_field = task.opt("answer_field", "answer")
    verdicts = []
    for it, p, mine, theirs in zip(items, prompts, replies, others):
        text = p if isinstance(p, str) else p[-1]["content"]
        v = judge(text, mine, theirs, str(it[answer_field]) if answer_field in it else None)
        if v not in ("a", "b", "tie"):
            raise UserError(f"judge returned {v!r}; a judge must return 'a', 'b' or 'tie'")
        verdicts.append(v)
    samples = [{"prompt": it.get("prompt", ""), "candidate": m, against: t, "verdict": v}
               for it, m, t, v in zip(items[:5], replies[:5], others[:5], verdicts[:5])]
    return {"metrics": win_rate(verdicts), "samples": samples, "outputs": replies, "against": against}
