"""Probe sets: the inputs that measure a model without a task of its own, one entry per task profile.

    probes = probe_set(resolve_probes("auto", parent_artifact))   # "arith" for the built-in demo, else "generic"
    raw, chats, seqs = probes.parity(tok, 32, context=4096)       # prompts and teacher-forced token ids
    probes.calibration(tok, 128)                                  # GPTQ calibration texts
    probes.exact_match(engine, 200)                               # a known-answer check, or None

Quantization parity, GPTQ calibration and decode-speed prompts read these, so quantize names no task: the
arithmetic set lives with the arithmetic task (`lifecycle.eval.arith`), the generic set with the generic
texts (`lifecycle.data.generic`), and a user's JSONL of {"text"} / {"prompt"} / {"messages"} lines is a set
too. Entries are "module:Class" strings, imported on demand.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol

from lifecycle.errors import UserError

PROBES: dict[str, str] = {
    "arith": "lifecycle.eval.arith:ArithProbes",
    "generic": "lifecycle.data.generic:GenericProbes",
}


class ProbeSet(Protocol):
    name: str

    def parity(self, tok, n: int, context: int = 0) -> tuple[list[str], list[list[dict]], list[list[int]]]:
        """Raw greedy prompts, chat greedy prompts, and token-id sequences to compare logits on."""

    def greedy_params(self):
        """SamplingParams for the raw greedy prompts."""

    def calibration(self, tok, n: int) -> list[str]:
        """Texts a quantizer may calibrate on (never the ones `parity` measures)."""

    def exact_match(self, engine, n: int) -> dict | None:
        """{"exact_match", "raw_exact_match"} on known answers, or None when the set has none."""


def resolve_probes(choice: str, artifact=None) -> str:
    """'auto' -> the artifact's task profile ('generic' with no artifact); a name or a JSONL path as given."""
    if choice != "auto":
        return choice
    if artifact is None:
        return "generic"
    from lifecycle.models import task_profile

    return task_profile(artifact)


def probe_set(choice: str) -> ProbeSet:
    """The probe set for a profile name, or the generic probes over a user's JSONL file."""
    if choice in PROBES:
        module, cls = PROBES[choice].split(":")
        return getattr(importlib.import_module(module), cls)()
    path = Path(choice).expanduser()
    if not path.is_file():
        raise UserError(f"probe set {choice!r} is neither one of {', '.join(PROBES)} nor an existing JSONL file")
    module, cls = PROBES["generic"].split(":")
    return getattr(importlib.import_module(module), cls)(source=str(path))
