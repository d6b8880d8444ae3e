"""`lifecycle quantize`: format conversion commands (added by the quantization layer)."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add the quantize commands to the root CLI. Nothing is registered until the quantization layer lands."""
