"""The release config: what `lifecycle ship` builds, measures and gates. YAML defaults, `--set` overrides.

    lifecycle ship --config configs/ship-default.yaml --set formats=[gguf-q8_0] --set bench.enabled=false

Stage sections (`sft`, `align`, `merge`) hold the fields of that stage's own config class (`lifecycle sft
--help` lists them), so a release config reads like the commands it replaces.
"""

from __future__ import annotations

from dataclasses import dataclass

from lifecycle.config import field
from lifecycle.errors import UserError

DEFAULT_GATES = {
    "all": ["addition/exact_match >= 0.9", "addition/verbose_rate <= 0.1", "bench/errors <= 0"],
    "quantized": ["addition/exact_match >= 97% of baseline"],
}
BENCH_DEFAULTS = {"enabled": True, "engine": "local", "concurrency": [1, 4], "num_prompts": 16, "input_len": 24,
                  "output_len": 16, "warmup": 2, "seed": 0}
DEPLOY_DEFAULTS = {"enabled": False, "engine": "local", "users": 4, "spawn_rate": 4.0, "duration": "10s",
                   "slo": "p95_ms=2000,error_rate=0.0", "startup_timeout_s": 180.0}
# Ship trains on the train split only and measures on eval tasks, so by default nothing is held back.
DATA_DEFAULTS = {"sft": "builtin:sft", "pref": "", "n_sft": 2000, "n_pref": 1000,
                 "prepare": {"validation_fraction": 0.0, "test_fraction": 0.0, "save_hf": False}}
EVAL_DEFAULTS = {"tasks": ["addition"], "limit": 0, "base": True}


@dataclass
class ShipConfig:
    base: str = field("tiny-arith", help="base model: built-in name, store name, artifact or HF checkpoint folder")
    data: dict = field(dict(DATA_DEFAULTS), help="sft / pref sources (builtin:NAME, .jsonl, folder or dataset "
                                                 "artifact; pref '' = the align method's built-in data), "
                                                 "n_sft / n_pref for builtin sources, prepare: "
                                                 "PrepareConfig fields (`lifecycle data prepare --help`)")
    pretrain: dict = field({}, help="optional continued pretraining of the base before SFT: PretrainConfig fields "
                                    "(`lifecycle pretrain --help`), e.g. {data: corpus.jsonl, max_steps: 200}; "
                                    "{} = none")
    sft: dict = field({}, help="SFTConfig fields, e.g. {method: lora, max_steps: 300}")
    align: dict = field({"method": "dpo"}, help="method (`lifecycle align --help` lists them) and its fields")
    merge: dict = field({}, help="MergeConfig fields, e.g. {tolerance: 0.001}")
    formats: dict | list = field({"gguf-q8_0": {}, "gguf-q4_0": {}, "int8": {}, "onnx-int8": {}},
                          help="quantized formats to build, each with its options (`lifecycle quantize --help`); "
                               "a list of names is accepted too")
    eval: dict = field(dict(EVAL_DEFAULTS), help="tasks (eval task names or YAML paths), limit (items per task, "
                                                 "0 = all), base (also evaluate the base for the record)")
    gates: dict = field({k: list(v) for k, v in DEFAULT_GATES.items()},
                        help="rules per scope: all, quantized, merged or an artifact name (lifecycle.eval.gates "
                             "syntax; relative rules compare with the merged model); a plain list means all")
    bench: dict = field(dict(BENCH_DEFAULTS), help="enabled, engine (local | ray), concurrency, num_prompts, "
                                                   "input_len, output_len, warmup, seed")
    deploy: dict = field(dict(DEPLOY_DEFAULTS), help="enabled, engine (local | ray), users, spawn_rate, duration, "
                                                     "slo (loadtest SLOs): serve, smoke test, Locust")
    serve: str = field("merged", help="the artifact `lifecycle serve --release` serves: merged or a format name")
    card: dict = field({}, help="model card fields: license, intended_use, limitations, language")
    cache_dir: str = field("", help="stage cache (default $LIFECYCLE_HOME/cache/ship); shared by releases")
    threads: int = field(2, help="torch threads for training stages (not part of any cache key)")
    seed: int = field(0, help="seed for every stage")

    def __post_init__(self) -> None:
        import yaml

        self.data = _merged("data", DATA_DEFAULTS, self.data)
        self.eval = _merged("eval", EVAL_DEFAULTS, self.eval)
        self.bench = _merged("bench", BENCH_DEFAULTS, self.bench)
        self.deploy = _merged("deploy", DEPLOY_DEFAULTS, self.deploy)
        if isinstance(self.formats, str):
            text = self.formats.strip()
            self.formats = (yaml.safe_load(text) if text.startswith(("[", "{"))
                            else [s.strip() for s in text.split(",") if s.strip()]) or []
        if isinstance(self.formats, list):
            self.formats = {name: {} for name in self.formats}
        if not isinstance(self.formats, dict) or not all(isinstance(v, dict) for v in self.formats.values()):
            raise UserError("formats must be a list of format names or a mapping name -> options")
        from quantize import format_spec

        for name in self.formats:
            format_spec(name)  # an unknown name lists the known ones
        _check_pretrain(self.pretrain, self.base)
        self.align = dict(self.align)
        self.align.setdefault("method", "dpo")
        from lifecycle.align.methods import method

        method(self.align["method"])
        if isinstance(self.gates, list):
            self.gates = {"all": self.gates}
        if not isinstance(self.gates, dict):
            raise UserError("gates must be a list of rules or a mapping scope -> list of rules")
        scopes = {"all", "quantized", "merged", *self.formats}
        unknown = set(self.gates) - scopes
        if unknown:
            raise UserError(f"gate scope(s) {', '.join(sorted(unknown))} name no artifact of this release; "
                            f"use one of {', '.join(sorted(scopes))}")
        from lifecycle.eval.gates import parse_rule

        for scope, rules in self.gates.items():
            if not isinstance(rules, list):
                raise UserError(f"gates.{scope} must be a list of rules")
            for i, r in enumerate(rules):
                parse_rule(r, f"gates.{scope} rule {i + 1}")
        if self.serve != "merged" and self.serve not in self.formats:
            raise UserError(f"serve: '{self.serve}' is not built by this release; use merged or one of "
                            f"{', '.join(self.formats) or '(no formats)'}")
        from serve.backends import backend

        for section in ("bench", "deploy"):
            if getattr(self, section)["enabled"]:
                try:
                    backend(getattr(self, section)["engine"])
                except UserError as e:
                    raise UserError(f"{section}.engine: {e}") from None
        if not isinstance(self.eval["tasks"], list) or not self.eval["tasks"]:
            raise UserError("eval.tasks must be a non-empty list of task names")


def _check_pretrain(section, base: str) -> None:
    """A pretrain section trains the base in full on a corpus; its fields are checked before anything runs."""
    if not isinstance(section, dict):
        raise UserError(f"pretrain must be a mapping of pretrain fields, got {section!r}")
    if not section:
        return
    if not section.get("data"):
        raise UserError("pretrain needs data: a corpus file, folder or dataset artifact (pretrain: {data: ...})")
    for key in ("model", "preset", "output"):
        if key in section:
            raise UserError(f"pretrain.{key} is set by ship (the base is what it continues to train); remove it")
    if section.get("method", "full") != "full":
        raise UserError("pretrain.method must be full in ship (its checkpoint is the base SFT trains on)")
    from lifecycle.config import from_dict
    from lifecycle.train.pretrain import PretrainConfig

    from_dict(PretrainConfig, {**section, "model": base})  # unknown fields and bad values fail here, in one line


def _merged(name: str, defaults: dict, given) -> dict:
    if not isinstance(given, dict):
        raise UserError(f"{name} must be a mapping, got {given!r}")
    unknown = set(given) - set(defaults)
    if unknown:
        raise UserError(f"unknown {name} field(s) {', '.join(sorted(unknown))}; known: {', '.join(defaults)}")
    out = {**defaults, **given}
    for k, v in defaults.items():  # nested mappings (data.prepare) keep the defaults they do not set
        if isinstance(v, dict) and isinstance(given.get(k), dict):
            out[k] = {**v, **given[k]}
    return out
