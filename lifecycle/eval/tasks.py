"""Task definitions: a YAML file naming a task type and its options, plus JSONL data beside it.

    name: addition              # metric keys become "addition/<metric>"
    type: generate              # generate | perplexity | classify | mc | retrieval | ifeval | safety | preference
    data: addition.jsonl        # relative to the YAML file
    prompt_format: chat         # chat (user message, chat template) or raw (plain text)
    template: "{question}"      # Python format string over each item's fields
    max_tokens: 24
    limit: 100                  # optional: evaluate the first N items

A task spec on the command line is a built-in name (`lifecycle eval tasks` lists them), a path to a
YAML file, or `mmlu:DIR` / `cmmlu:DIR` for a local copy of those datasets. Each type's own options are
documented in the module that runs it (see TYPES).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle.data.load import read_jsonl
from lifecycle.engine import Prompt
from lifecycle.errors import UserError

BUILTIN_DIR = Path(__file__).parent / "tasks"
DEFAULT_TASKS = ["addition", "addition-raw", "arith-ppl", "tiny-mc", "sum-retrieval", "ifeval-tiny",
                 "redteam", "style"]

# task type -> "module:function"; the module is imported only when a task of that type runs.
TYPES: dict[str, str] = {
    "generate": "lifecycle.eval.generation:run_generate",
    "perplexity": "lifecycle.eval.generation:run_perplexity",
    "classify": "lifecycle.eval.classify:run",
    "mc": "lifecycle.eval.mc:run",
    "retrieval": "lifecycle.eval.retrieval:run",
    "ifeval": "lifecycle.eval.ifeval:run",
    "safety": "lifecycle.eval.safety:run",
    "preference": "lifecycle.eval.preference:run",
}


@dataclass
class Task:
    name: str
    type: str
    options: dict = field(default_factory=dict)
    root: Path | None = None  # folder that relative data paths are read from

    def opt(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def path(self, key: str) -> Path:
        value = self.opt(key)
        if not value:
            raise UserError(f"task '{self.name}' needs '{key}' (a path)")
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() or self.root is None else self.root / p

    def items(self, key: str = "data") -> list[dict]:
        rows = read_jsonl(self.path(key))
        limit = self.opt("limit")
        return rows[: int(limit)] if limit else rows

    def prompt(self, item: dict) -> Prompt:
        """The item as a chat (prompt_format: chat, the default) or a raw string, via `template`."""
        if "messages" in item:
            return item["messages"]
        template = self.opt("template", "{prompt}")
        try:
            text = template.format(**item)
        except KeyError as e:
            raise UserError(f"task '{self.name}': template {template!r} uses field {e} that an item lacks") from None
        fmt = self.opt("prompt_format", "chat")
        if fmt not in ("chat", "raw"):
            raise UserError(f"task '{self.name}': prompt_format must be chat or raw, got {fmt!r}")
        return [{"role": "user", "content": text}] if fmt == "chat" else text

    def runner(self):
        module, func = TYPES[self.type].split(":")
        return getattr(importlib.import_module(module), func)


def as_text(engine, prompt: Prompt) -> str:
    """A prompt as raw text for `score`: chats go through the engine's chat template when it has one."""
    if isinstance(prompt, str):
        return prompt
    render = getattr(engine, "apply_chat_template", None)
    if render is None:
        raise UserError("this engine cannot render a chat for scoring; set prompt_format: raw on the task")
    return render(prompt)


def load_task(path: str | Path) -> Task:
    import yaml

    p = Path(path).expanduser()
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"task file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict) or "type" not in data:
        raise UserError(f"task file {p} must be a mapping with at least 'type' (one of {', '.join(TYPES)})")
    data = dict(data)
    name = str(data.pop("name", p.stem))
    ttype = data.pop("type")
    if ttype not in TYPES:
        raise UserError(f"task '{name}' has unknown type {ttype!r}; known: {', '.join(TYPES)}")
    if "/" in name:
        raise UserError(f"task name '{name}' must not contain '/' (it prefixes metric keys)")
    return Task(name=name, type=ttype, options=data, root=p.parent.resolve())


def builtin_tasks() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def resolve_tasks(specs: list[str] | None) -> list[Task]:
    """Turn CLI specs (comma lists allowed) into tasks; no spec means the default built-in set."""
    flat = [s.strip() for spec in (specs or []) for s in spec.split(",") if s.strip()] or list(DEFAULT_TASKS)
    builtin = builtin_tasks()
    tasks: list[Task] = []
    for spec in flat:
        if spec in ("default", "all"):
            tasks += [load_task(builtin[n]) for n in DEFAULT_TASKS]
        elif spec.split(":", 1)[0] in ("mmlu", "cmmlu") and ":" in spec:
            source, folder = spec.split(":", 1)
            tasks.append(Task(name=source, type="mc", options={"source": source, "path": folder}))
        elif spec in builtin:
            tasks.append(load_task(builtin[spec]))
        elif Path(spec).expanduser().is_file():
            tasks.append(load_task(spec))
        else:
            raise UserError(f"unknown task '{spec}': give a built-in name ({', '.join(builtin)}), a task YAML "
                            "path, or mmlu:DIR / cmmlu:DIR")
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"task name(s) given twice: {', '.join(dupes)}")
    return tasks
