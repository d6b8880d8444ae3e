"""`lifecycle align`: preference and RL alignment commands. Heavy imports stay inside command bodies."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lifecycle.cli_common import ConfigOpt, ModelOpt, OutputOpt, OverwriteOpt, SetOpt, epilog, run_stage
from lifecycle.errors import UserError


def register(root: typer.Typer) -> None:
    @root.command(epilog=epilog("lifecycle.align.dpo:DPOConfig"))
    def align(
        method: Annotated[str, typer.Option(help="alignment method: dpo")] = "dpo",
        model: ModelOpt = None,
        data: Annotated[Optional[str], typer.Option(help="builtin:pref-style|pref-correctness|pref-mixed, or a .jsonl of prompt/chosen/rejected")] = None,
        max_steps: Annotated[Optional[int], typer.Option(help="optimizer steps")] = None,
        config: ConfigOpt = None, set: SetOpt = None, output: OutputOpt = None, overwrite: OverwriteOpt = False,
    ) -> None:
        """Align a policy on preference pairs (TRL DPO, reference = the given policy)."""
        if method != "dpo":
            raise UserError(f"align method '{method}' is not available yet; use --method dpo")
        from lifecycle.align import dpo as stage

        run_stage("dpo", stage.DPOConfig, stage.run, config, set,
                   {"model": model, "data": data, "max_steps": max_steps}, output, overwrite)
