"""The alignment methods `lifecycle align --method` offers: name -> config class and run function.

Entries are "module:ConfigClass:run_function", imported on demand so `--help` stays light (config modules
import no torch). A test imports every entry, so a broken one fails loudly.
"""

from __future__ import annotations

from lifecycle.errors import UserError

METHODS: dict[str, str] = {
    "dpo": "lifecycle.align.dpo:DPOConfig:run",
    "ipo": "lifecycle.align.preference:IPOConfig:run_ipo",
    "simpo": "lifecycle.align.preference:SimPOConfig:run_simpo",
    "cpo": "lifecycle.align.preference:CPOConfig:run_cpo",
    "orpo": "lifecycle.align.preference:ORPOConfig:run_orpo",
    "kto": "lifecycle.align.preference:KTOConfig:run_kto",
    "grpo": "lifecycle.align.rl:GRPOConfig:run_grpo",
    "rloo": "lifecycle.align.rl:RLOOConfig:run_rloo",
}
DATA = {
    "dpo": "pairs prompt/chosen/rejected (builtin:pref-style)",
    "ipo": "pairs prompt/chosen/rejected (builtin:pref-style)",
    "simpo": "pairs prompt/chosen/rejected (builtin:pref-style)",
    "cpo": "pairs prompt/chosen/rejected (builtin:pref-style)",
    "orpo": "pairs prompt/chosen/rejected (builtin:pref-style)",
    "kto": "unpaired prompt/completion/label (builtin:kto-style)",
    "grpo": "prompts with answer (builtin:prompts); reward=exact,concise or a reward artifact",
    "rloo": "prompts with answer (builtin:prompts); reward=exact,concise or a reward artifact",
}


def lookup(method: str):
    """(config class, run function) for a method name; one clear error for an unknown one."""
    import importlib

    if method not in METHODS:
        raise UserError(f"align method '{method}' is unknown; choose one of {', '.join(METHODS)} "
                        "(PPO is not offered: TRL 1.x removed it; use grpo or rloo)")
    module, cls, fn = METHODS[method].split(":")
    mod = importlib.import_module(module)
    return getattr(mod, cls), getattr(mod, fn)


def _default(f):
    import dataclasses

    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def help_text() -> str:
    """Methods, their data, and the fields each adds, for `lifecycle align --help`."""
    import dataclasses
    import importlib

    from lifecycle.align.common import PolicyOptions

    shared = [f.name for f in dataclasses.fields(PolicyOptions)]
    lines = ["Methods (--method NAME; fields via YAML or --set key=value; examples in configs/align-NAME.yaml).",
             f"Fields every method takes: {', '.join(shared)}."]
    for name, entry in METHODS.items():
        module, cls, _ = entry.split(":")
        config = getattr(importlib.import_module(module), cls)
        fields = ", ".join(f"{f.name}={_default(f)!r}"
                           for f in dataclasses.fields(config)
                           if f.name not in shared or f.name == "data")
        lines.append(f"  {name}: {DATA[name]}. Own fields and defaults: {fields}")
    return "\n\n".join(lines)
