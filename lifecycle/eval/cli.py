"""`lifecycle eval`: evaluation commands (added by the evaluation layer)."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add the eval commands to the root CLI. Nothing is registered until the eval layer lands."""
