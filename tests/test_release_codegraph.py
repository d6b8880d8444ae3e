"""The code part of ship's cache keys: the project modules a stage can import, found by reading imports."""

import pytest

from lifecycle.release.codegraph import ROOT, closure, direct_imports, module_file

pytestmark = pytest.mark.unit


def _rel(files):
    return {str(f.relative_to(ROOT)) for f in files}


def test_function_level_imports_are_followed():
    from lifecycle.release.stages import SKIP_REGISTRIES

    sft = _rel(closure(["lifecycle.train.sft"], SKIP_REGISTRIES))
    # sft imports chat_masks and common inside run(); common imports eval/arith inside stage_eval()
    assert {"lifecycle/train/sft.py", "lifecycle/train/chat_masks.py", "lifecycle/train/common.py",
            "lifecycle/eval/arith.py", "lifecycle/loading.py", "lifecycle/__init__.py"} <= sft
    assert not any(f.startswith(("quantize/", "serve/")) for f in sft)


def test_registry_strings_count_as_imports_unless_skipped():
    tasks = _rel(closure(["lifecycle.eval.tasks"]))
    assert "lifecycle/eval/mc.py" in tasks and "lifecycle/eval/ifeval.py" in tasks  # TYPES "module:function"
    with_engines = _rel(closure(["lifecycle.engine"]))
    without = _rel(closure(["lifecycle.engine"], skip_registries=("lifecycle.engine",)))
    assert "lifecycle/engines/hf.py" in with_engines and "lifecycle/engines/hf.py" not in without
    assert not any(f.startswith("quantize/") for f in with_engines)  # the core names no quantize engine


def test_relative_and_from_imports_resolve_to_modules():
    assert module_file("lifecycle.train.sft") == ROOT / "lifecycle" / "train" / "sft.py"
    assert module_file("lifecycle.train") == ROOT / "lifecycle" / "train" / "__init__.py"
    assert module_file("torch") is None and module_file("lifecycle.nope") is None
    assert "lifecycle.release.cache" in direct_imports(ROOT / "lifecycle" / "release" / "stages.py")
