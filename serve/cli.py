"""`lifecycle serve` and `lifecycle batch` (added by the serving layer)."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add the serving commands to the root CLI. Nothing is registered until the serving layer lands."""
