"""Every registry entry of every extension point imports and carries what its callers use (docs/architecture.md).
A broken entry fails here, loudly, instead of deep inside a command."""

import dataclasses
import importlib
import importlib.metadata
import importlib.util

import pytest

pytestmark = pytest.mark.unit


def test_every_format_entry_has_producer_engine_options_and_dists():
    from quantize import FORMATS, missing_requirements
    from quantize.driver import QuantOptions

    for name, spec in FORMATS.items():
        for dist in spec.dists:
            assert importlib.metadata.version(dist), (name, dist)  # the distribution really exists
        if missing_requirements(name):
            continue  # cannot happen where `.[quant]` is installed (CI), checked by test_quant_core
        mod = importlib.import_module(spec.module)
        assert callable(mod.produce) and issubclass(mod.Options, QuantOptions), name
        assert getattr(mod, spec.engine).__name__ == spec.engine, name


def test_every_align_method_entry_resolves_with_its_data_kind():
    from lifecycle.align.common import PolicyOptions
    from lifecycle.align.dpo import DPOConfig
    from lifecycle.align.methods import DATA_KINDS, METHODS, lookup

    for name, entry in METHODS.items():
        cls, run = lookup(name)
        assert dataclasses.is_dataclass(cls) and callable(run), name
        assert issubclass(cls, (PolicyOptions, DPOConfig)) and entry.data in DATA_KINDS, name
        assert entry.builtin_data.startswith("builtin:"), name


def test_every_probe_set_entry_provides_the_protocol():
    from lifecycle.probes import PROBES, probe_set

    for name in PROBES:
        probes = probe_set(name)
        for method in ("parity", "greedy_params", "calibration", "exact_match"):
            assert callable(getattr(probes, method)), (name, method)


def test_every_stage_kind_names_real_modules():
    from lifecycle.release.codegraph import module_file
    from lifecycle.release.stages import STAGES

    for kind, spec in STAGES.items():
        assert spec.output in ("artifact", "json", "live") and callable(spec.metrics), kind
        for module in spec.modules:
            assert module_file(module) is not None, (kind, module)
        for lib in spec.libs:
            assert importlib.util.find_spec(lib.replace("-", "_")) or importlib.metadata.version(lib), (kind, lib)


def test_every_eval_task_type_imports():
    from lifecycle.eval.tasks import TYPES

    for name, target in TYPES.items():
        module, fn = target.split(":")
        assert callable(getattr(importlib.import_module(module), fn)), name
