"""Offline preference methods beyond plain DPO: IPO, SimPO, CPO, ORPO (pairs) and KTO (unpaired labels).

    lifecycle align --method ipo   --model runs/sft --data builtin:pref-style -o runs/ipo
    lifecycle align --method simpo --model runs/sft --data builtin:pref-style -o runs/simpo
    lifecycle align --method cpo   --model runs/sft --data builtin:pref-style -o runs/cpo
    lifecycle align --method orpo  --model runs/sft --data builtin:pref-style -o runs/orpo
    lifecycle align --method kto   --model runs/sft --data builtin:kto-style  -o runs/kto

IPO is TRL's DPOTrainer with `loss_type=ipo` (reference = the given policy). SimPO (length-normalised,
reference-free, with a target margin; by default with CPO's NLL term on chosen, since pure SimPO halved
exact match on tiny-arith) and CPO come from `trl.experimental.cpo`; ORPO from
`trl.experimental.orpo`; KTO is TRL's KTOTrainer on unpaired good/bad labels (reference = the policy with
the adapter disabled). Each trains a LoRA and writes an adapter artifact that `lifecycle merge` accepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lifecycle.align.common import PolicyOptions
from lifecycle.config import field
from lifecycle.errors import UserError


@dataclass
class IPOConfig(PolicyOptions):
    METHOD = "ipo"
    data: str = field("builtin:pref-style", help="pairs with prompt/chosen/rejected: builtin:pref-*, .jsonl or dataset artifact")
    loss_type: list[str] = field(["ipo", "sft"], help="TRL DPO loss terms; ipo alone, or ipo,sft to anchor correctness")
    beta: float = field(0.1, help="IPO regulariser tau: higher = smaller moves from the reference")


@dataclass
class SimPOConfig(PolicyOptions):
    METHOD = "simpo"
    data: str = field("builtin:pref-style", help="pairs with prompt/chosen/rejected")
    beta: float = field(2.0, help="SimPO reward scale on the length-normalised log-probability")
    simpo_gamma: float = field(0.5, help="target reward margin between chosen and rejected")
    cpo_alpha: float = field(1.0, help="weight of an NLL term on chosen; 0 = pure SimPO, which lost half the "
                             "exact match on tiny-arith, 1 (CPO-SimPO) kept it")


@dataclass
class CPOConfig(PolicyOptions):
    METHOD = "cpo"
    data: str = field("builtin:pref-style", help="pairs with prompt/chosen/rejected")
    beta: float = field(0.1, help="temperature of the preference loss")
    cpo_alpha: float = field(1.0, help="weight of the NLL term on chosen that CPO adds")


@dataclass
class ORPOConfig(PolicyOptions):
    METHOD = "orpo"
    data: str = field("builtin:pref-style", help="pairs with prompt/chosen/rejected")
    beta: float = field(0.1, help="weight of the odds-ratio term (lambda in the paper) against the SFT loss")


@dataclass
class KTOConfig(PolicyOptions):
    METHOD = "kto"
    data: str = field("builtin:kto-style", help="unpaired records prompt/completion/label: builtin:kto-*, .jsonl")
    beta: float = field(0.1, help="strength of the pull toward the reference")
    desirable_weight: float = field(1.0, help="loss weight of good examples (raise it if good ones are rarer)")
    undesirable_weight: float = field(1.0, help="loss weight of bad examples")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 2:
            raise UserError("KTO needs batch_size >= 2: it estimates its KL baseline from mismatched pairs in a batch")


PAIR_EXAMPLE = "builtin:pref-style"


def _pairs(cfg, method: str):
    from datasets import Dataset

    from lifecycle.align.common import load_data
    from lifecycle.data.load import PREFERENCE_FIELDS

    records = load_data(cfg.data, PREFERENCE_FIELDS, method, PAIR_EXAMPLE, cfg.n_examples, cfg.seed)
    return Dataset.from_list([{k: r[k] for k in PREFERENCE_FIELDS} for r in records])


def _reward_metrics(trainer, log) -> dict:
    from lifecycle.align.common import last_logged

    last = last_logged(log.history, "rewards/")
    return {"train_reward_accuracy": last.get("rewards/accuracies"), "train_reward_margin": last.get("rewards/margins")}


def _lora(cfg):
    from lifecycle.train.sft import lora_config

    return lora_config(cfg)


def run_ipo(cfg: IPOConfig, out: Path) -> Path:
    from trl import DPOConfig, DPOTrainer

    from lifecycle.align.common import load_policy, train_and_write
    from lifecycle.train.common import progress_callback, trainer_common_args

    data = _pairs(cfg, "ipo")
    policy, model, tok = load_policy(cfg)

    def make(work, log):
        args = DPOConfig(**trainer_common_args(work, cfg), loss_type=cfg.loss_type, beta=cfg.beta,
                         max_length=cfg.max_length)
        return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=data, processing_class=tok,
                          peft_config=_lora(cfg), callbacks=[progress_callback(log, "ipo")])

    return train_and_write(cfg, out, policy, model, tok, make, _reward_metrics)


def _quiet_experimental() -> None:
    import os

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # we chose trl.experimental knowingly


def _run_cpo_family(cfg, out: Path, loss_type: str) -> Path:
    _quiet_experimental()
    from trl.experimental.cpo import CPOConfig as TRLCPOConfig
    from trl.experimental.cpo import CPOTrainer

    from lifecycle.align.common import load_policy, train_and_write
    from lifecycle.train.common import progress_callback, trainer_common_args

    data = _pairs(cfg, cfg.METHOD)
    policy, model, tok = load_policy(cfg)
    extra = {"simpo_gamma": cfg.simpo_gamma} if loss_type == "simpo" else {}

    def make(work, log):
        args = TRLCPOConfig(**trainer_common_args(work, cfg), loss_type=loss_type, beta=cfg.beta,
                            cpo_alpha=cfg.cpo_alpha, max_length=cfg.max_length, remove_unused_columns=False,
                            **extra)
        return CPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                          peft_config=_lora(cfg), callbacks=[progress_callback(log, cfg.METHOD)])

    return train_and_write(cfg, out, policy, model, tok, make, _reward_metrics)


def run_simpo(cfg: SimPOConfig, out: Path) -> Path:
    return _run_cpo_family(cfg, out, "simpo")


def run_cpo(cfg: CPOConfig, out: Path) -> Path:
    return _run_cpo_family(cfg, out, "sigmoid")


def run_orpo(cfg: ORPOConfig, out: Path) -> Path:
    _quiet_experimental()
    from trl.experimental.orpo import ORPOConfig as TRLORPOConfig
    from trl.experimental.orpo import ORPOTrainer

    from lifecycle.align.common import load_policy, train_and_write
    from lifecycle.train.common import progress_callback, trainer_common_args

    data = _pairs(cfg, "orpo")
    policy, model, tok = load_policy(cfg)

    def make(work, log):
        args = TRLORPOConfig(**trainer_common_args(work, cfg), beta=cfg.beta, max_length=cfg.max_length,
                             remove_unused_columns=False)
        return ORPOTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                           peft_config=_lora(cfg), callbacks=[progress_callback(log, "orpo")])

    return train_and_write(cfg, out, policy, model, tok, make, _reward_metrics)


def run_kto(cfg: KTOConfig, out: Path) -> Path:
    from datasets import Dataset
    from trl import KTOConfig as TRLKTOConfig
    from trl import KTOTrainer

    from lifecycle.align.common import (
        last_logged,
        load_data,
        load_policy,
        train_and_write,
    )
    from lifecycle.data.load import UNPAIRED_FIELDS
    from lifecycle.train.common import progress_callback, trainer_common_args

    records = load_data(cfg.data, UNPAIRED_FIELDS, "kto", "builtin:kto-style", cfg.n_examples, cfg.seed)
    policy, model, tok = load_policy(cfg)
    data = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"], "label": bool(r["label"])}
                              for r in records])

    def make(work, log):
        args = TRLKTOConfig(**trainer_common_args(work, cfg), beta=cfg.beta, max_length=cfg.max_length,
                            desirable_weight=cfg.desirable_weight, undesirable_weight=cfg.undesirable_weight)
        return KTOTrainer(model=model, ref_model=None, args=args, train_dataset=data, processing_class=tok,
                          peft_config=_lora(cfg), callbacks=[progress_callback(log, "kto")])

    def extra(trainer, log):
        last = last_logged(log.history, "")
        return {"train_kl": last.get("kl"), "train_reward_margin": last.get("rewards/margins")}

    return train_and_write(cfg, out, policy, model, tok, make, extra)
