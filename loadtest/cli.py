"""`lifecycle bench` and `lifecycle loadtest` (added by the benchmarking layer)."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add the bench and loadtest commands to the root CLI. Nothing is registered until that layer lands."""
