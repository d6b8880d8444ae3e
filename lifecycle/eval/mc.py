"""Multiple choice by log-likelihood over the options, MMLU / CMMLU style, zero- or few-shot.

Items are {"subject", "question", "choices": [...], "answer": index or letter}. Sources:
- `source: jsonl` (default): `data` (and optional `dev` for few-shot examples) JSONL files;
- `source: mmlu`, `path: DIR`: MMLU's layout, one headerless CSV per subject and split
  (question,A,B,C,D,answer), e.g. DIR/dev/abstract_algebra_dev.csv, DIR/test/abstract_algebra_test.csv;
- `source: cmmlu`, `path: DIR`: CMMLU's layout, DIR/dev/agronomy.csv and DIR/test/agronomy.csv with a
  header row `,Question,A,B,C,D,Answer`.
Options: `mode` (letter: MMLU prompt, score " A" .. " D"; text: score each option's text after the
question), `shots` (examples per subject from the dev split), `split` (default test), `subjects`
(a list to restrict to), `length_normalize` (text mode: compare mean log-prob per token), `suffix` (text mode: scored after each
option, e.g. "\n", so an option that is a prefix of another is not favoured), `limit`
(items per subject). Metrics: `accuracy` overall (micro) and `accuracy/<subject>`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from lifecycle.engine import Engine
from lifecycle.errors import UserError
from lifecycle.data.load import read_csv_rows, read_jsonl
from lifecycle.eval.tasks import Task

LETTERS = "ABCDEFGHIJ"
HEADERS = {
    "en": ("The following are multiple choice questions (with answers) about {subject}.\n\n", "Answer:"),
    "zh": ("以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n", "答案："),
}


def _answer_index(value, n: int, where: str) -> int:
    s = str(value).strip()
    idx = LETTERS.index(s.upper()) if len(s) == 1 and s.upper() in LETTERS else int(s) if s.isdigit() else -1
    if not 0 <= idx < n:
        raise UserError(f"{where}: answer {value!r} is not one of the {n} options")
    return idx


MMLU_COLUMNS = ["question", "A", "B", "C", "D", "answer"]  # MMLU's CSVs have no header row


def read_mmlu(root: str | Path, split: str = "test") -> list[dict]:
    """MMLU: DIR/<split>/<subject>_<split>.csv, no header, rows question,A,B,C,D,answer."""
    folder = Path(root).expanduser() / split
    files = sorted(folder.glob(f"*_{split}.csv"))
    if not files:
        raise UserError(f"no MMLU files {folder}/*_{split}.csv (expected MMLU's data/ layout)")
    items = []
    for f in files:
        subject = f.name[: -len(f"_{split}.csv")]
        for line, row in read_csv_rows(f, fieldnames=MMLU_COLUMNS):
            items.append({"subject": subject, "question": row["question"], "choices": [row[c] for c in "ABCD"],
                          "answer": _answer_index(row["answer"], 4, f"{f}:{line}")})
    return items


def read_cmmlu(root: str | Path, split: str = "test") -> list[dict]:
    """CMMLU: DIR/<split>/<subject>.csv with header `,Question,A,B,C,D,Answer`."""
    folder = Path(root).expanduser() / split
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise UserError(f"no CMMLU files {folder}/*.csv (expected CMMLU's dev/ and test/ layout)")
    need = {"Question", "A", "B", "C", "D", "Answer"}
    items = []
    for f in files:
        rows = read_csv_rows(f)
        if rows and not need <= rows[0][1].keys():
            raise UserError(f"{f}: header must hold {', '.join(sorted(need))}, got {list(rows[0][1])}")
        for line, row in rows:
            items.append({"subject": f.stem, "question": row["Question"], "choices": [row[c] for c in "ABCD"],
                          "answer": _answer_index(row["Answer"], 4, f"{f}:{line}")})
    return items


def load_items(task: Task, split: str) -> list[dict]:
    source = task.opt("source", "jsonl")
    if source == "mmlu":
        items = read_mmlu(task.path("path"), split)
    elif source == "cmmlu":
        items = read_cmmlu(task.path("path"), split)
    elif source == "jsonl":
        key = "data" if split == task.opt("split", "test") else "dev"
        if key == "dev" and not task.opt("dev"):
            return []
        items = read_jsonl(task.path(key))
        for i, it in enumerate(items, 1):
            if "question" not in it or not isinstance(it.get("choices"), list):
                raise UserError(f"task '{task.name}' item {i}: needs 'question' and a 'choices' list")
            it.setdefault("subject", task.name)
            it["answer"] = _answer_index(it.get("answer"), len(it["choices"]), f"task '{task.name}' item {i}")
    else:
        raise UserError(f"task '{task.name}': source must be jsonl, mmlu or cmmlu, got {source!r}")
    wanted = task.opt("subjects")
    return [it for it in items if not wanted or it["subject"] in wanted]


def format_question(item: dict, header: str, answer_word: str, with_answer: bool) -> str:
    lines = [item["question"]] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(item["choices"])]
    tail = f"{answer_word} {LETTERS[item['answer']]}\n\n" if with_answer else answer_word
    return "\n".join(lines) + "\n" + tail


def requests_for(item: dict, shots: list[dict], mode: str, lang: str = "en",
                 suffix: str = "") -> list[tuple[str, str]]:
    """(context, continuation) per option for one item."""
    if mode == "letter":
        header, word = HEADERS[lang]
        ctx = header.format(subject=item["subject"].replace("_", " "))
        ctx += "".join(format_question(s, header, word, True) for s in shots)
        ctx += format_question(item, header, word, False)
        return [(ctx, f" {LETTERS[i]}") for i in range(len(item["choices"]))]
    if mode == "text":
        ctx = "".join(f"{s['question']}{s['choices'][s['answer']]}\n" for s in shots) + item["question"]
        return [(ctx, c + suffix) for c in item["choices"]]
    raise UserError(f"mc mode must be letter or text, got {mode!r}")


def run(task: Task, engine: Engine, ctx) -> dict:
    split = task.opt("split", "test")
    items = load_items(task, split)
    if not items:
        raise UserError(f"task '{task.name}': no items to evaluate")
    limit = task.opt("limit")
    if limit:
        per: dict[str, int] = defaultdict(int)
        kept = []
        for it in items:
            if per[it["subject"]] < int(limit):
                per[it["subject"]] += 1
                kept.append(it)
        items = kept
    shots_n = int(task.opt("shots", 0))
    dev: dict[str, list[dict]] = defaultdict(list)
    if shots_n:
        for it in load_items(task, "dev"):
            dev[it["subject"]].append(it)
    mode = task.opt("mode", "letter")
    lang = task.opt("language", "zh" if task.opt("source") == "cmmlu" else "en")
    reqs, spans = [], []
    for it in items:
        r = requests_for(it, dev[it["subject"]][:shots_n], mode, lang, str(task.opt("suffix", "")))
        spans.append((len(reqs), len(r)))
        reqs += r
    scores = engine.score(reqs)
    norm = bool(task.opt("length_normalize", False))
    per_subject: dict[str, list[int]] = defaultdict(list)
    samples = []
    for it, (start, k) in zip(items, spans):
        vals = [s.logprob / max(s.num_tokens, 1) if norm else s.logprob for s in scores[start:start + k]]
        pred = max(range(k), key=vals.__getitem__)
        per_subject[it["subject"]].append(int(pred == it["answer"]))
        if len(samples) < 5:
            samples.append({"subject": it["subject"], "question": it["question"], "predicted": LETTERS[pred],
                            "answer": LETTERS[it["answer"]]})
    hits = [h for v in per_subject.values() for h in v]
    result = {"accuracy": sum(hits) / len(hits), "n": len(hits), "subjects": len(per_subject)}
    for subject, v in sorted(per_subject.items()):
        result[f"accuracy/{subject}"] = sum(v) / len(v)
    return {"metrics": result, "samples": samples}
