"""The unit every reader yields: one raw object, or one failure to read one, with where it came from.

Shared by the file and dataset readers (`lifecycle.data.collect`) and the crawler (`lifecycle.data.crawl`),
so neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Item:
    """One raw object (`obj`) or one failure to read one (`error`, `reason`)."""

    where: str
    obj: Any = None
    error: str | None = None
    reason: str = "malformed"
