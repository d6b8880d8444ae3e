"""The alignment methods `lifecycle align --method` offers: one registry entry per method carries everything.

An entry names its config class and run function ("module:ConfigClass:run_function", imported on demand so
`--help` stays light), the kind of data it trains on and its built-in data. The CLI help, the ship config
check, the data ship prepares for it and the align stage's cache key are all derived from this table, so a
new method is one module plus one line here. A test imports every entry, so a broken one fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass

from lifecycle.errors import UserError


@dataclass(frozen=True)
class DataKind:
    fields: tuple[str, ...]
    describe: str


DATA_KINDS = {
    "pairs": DataKind(("prompt", "chosen", "rejected"), "pairs prompt/chosen/rejected"),
    "unpaired": DataKind(("prompt", "completion", "label"), "unpaired prompt/completion/label"),
    "prompts": DataKind(("prompt",), "prompts (with answer for the exact reward)"),
}


@dataclass(frozen=True)
class Method:
    target: str  # "module:ConfigClass:run_function"
    data: str  # a DATA_KINDS name
    builtin_data: str  # what ship and the CLI train on when no data is given
    note: str = ""

    @property
    def module(self) -> str:
        return self.target.split(":")[0]

    @property
    def fields(self) -> tuple[str, ...]:
        return DATA_KINDS[self.data].fields

    @property
    def paired(self) -> bool:
        """Pair data is prepared like any dataset (dedup, splits); unpaired labels and prompts are read as is."""
        return self.data == "pairs"


METHODS: dict[str, Method] = {
    "dpo": Method("lifecycle.align.dpo:DPOConfig:run", "pairs", "builtin:pref-style"),
    "ipo": Method("lifecycle.align.preference:IPOConfig:run_ipo", "pairs", "builtin:pref-style"),
    "simpo": Method("lifecycle.align.preference:SimPOConfig:run_simpo", "pairs", "builtin:pref-style"),
    "cpo": Method("lifecycle.align.preference:CPOConfig:run_cpo", "pairs", "builtin:pref-style"),
    "orpo": Method("lifecycle.align.preference:ORPOConfig:run_orpo", "pairs", "builtin:pref-style"),
    "kto": Method("lifecycle.align.preference:KTOConfig:run_kto", "unpaired", "builtin:kto-style"),
    "grpo": Method("lifecycle.align.rl:GRPOConfig:run_grpo", "prompts", "builtin:prompts",
                   "reward=exact,concise or a reward artifact"),
    "rloo": Method("lifecycle.align.rl:RLOOConfig:run_rloo", "prompts", "builtin:prompts",
                   "reward=exact,concise or a reward artifact"),
}
NOT_OFFERED = "PPO is not offered: TRL 1.x removed it; use grpo or rloo"


def method(name: str) -> Method:
    if name not in METHODS:
        raise UserError(f"align method '{name}' is unknown; choose one of {', '.join(METHODS)} ({NOT_OFFERED})")
    return METHODS[name]


def lookup(name: str):
    """(config class, run function) for a method name; one clear error for an unknown one."""
    import importlib

    module, cls, fn = method(name).target.split(":")
    mod = importlib.import_module(module)
    return getattr(mod, cls), getattr(mod, fn)


def names() -> str:
    return " | ".join(METHODS)


def _default(f):
    import dataclasses

    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def help_text() -> str:
    """Methods, their data, and the fields each adds, for `lifecycle align --help`."""
    import dataclasses

    from lifecycle.align.common import PolicyOptions

    shared = [f.name for f in dataclasses.fields(PolicyOptions)]
    lines = ["Methods (--method NAME; fields via YAML or --set key=value; examples in configs/align-NAME.yaml).",
             f"Fields every method takes: {', '.join(shared)}."]
    for name, entry in METHODS.items():
        config, _ = lookup(name)
        fields = ", ".join(f"{f.name}={_default(f)!r}"
                           for f in dataclasses.fields(config)
                           if f.name not in shared or f.name == "data")
        data = f"{DATA_KINDS[entry.data].describe} ({entry.builtin_data})" + (f"; {entry.note}" if entry.note else "")
        lines.append(f"  {name}: {data}. Own fields and defaults: {fields}")
    return "\n\n".join(lines)
