"""`lifecycle align` and `lifecycle reward`: preference, RL and reward-model commands.

Heavy imports stay inside command bodies; the method table lives in `lifecycle.align.methods`.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lifecycle.cli_common import (
    ConfigOpt,
    ModelOpt,
    OutputOpt,
    OverwriteOpt,
    SetOpt,
    epilog,
    run_stage,
)


def _methods_help() -> str:
    from lifecycle.align.methods import help_text

    return help_text()


def _method_names() -> str:
    from lifecycle.align.methods import NOT_OFFERED, names

    return f"{names()} ({NOT_OFFERED})"


def register(root: typer.Typer) -> None:
    @root.command(epilog=_methods_help())
    def align(
        method: Annotated[str, typer.Option(help=_method_names())] = "dpo",
        model: ModelOpt = None,
        data: Annotated[Optional[str], typer.Option(help="pairs (builtin:pref-*), unpaired labels (builtin:kto-*), prompts (builtin:prompts), or a .jsonl")] = None,
        max_steps: Annotated[Optional[int], typer.Option(help="optimizer steps")] = None,
        config: ConfigOpt = None, set: SetOpt = None, output: OutputOpt = None, overwrite: OverwriteOpt = False,
    ) -> None:
        """Align a policy: offline preference methods (DPO family, ORPO, CPO, SimPO, KTO) or RL (GRPO, RLOO)."""
        from lifecycle.align.methods import lookup

        cls, run = lookup(method)
        run_stage(method, cls, run, config, set, {"model": model, "data": data, "max_steps": max_steps},
                  output, overwrite)

    @root.command(epilog=epilog("lifecycle.align.reward:RewardConfig"))
    def reward(
        model: ModelOpt = None,
        data: Annotated[Optional[str], typer.Option(help="pairs prompt/chosen/rejected: builtin:pref-correctness|pref-style|pref-mixed or a .jsonl")] = None,
        max_steps: Annotated[Optional[int], typer.Option(help="optimizer steps")] = None,
        config: ConfigOpt = None, set: SetOpt = None, output: OutputOpt = None, overwrite: OverwriteOpt = False,
    ) -> None:
        """Train a reward model (TRL RewardTrainer) and report pairwise accuracy on held-out pairs."""
        from lifecycle.align import reward as stage

        run_stage("reward", stage.RewardConfig, stage.run, config, set,
                  {"model": model, "data": data, "max_steps": max_steps}, output, overwrite)
