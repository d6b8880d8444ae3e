"""The layers point one way (shared/ARCHITECTURE.md, docs/architecture.md): checked on the import graph,
function-level imports included, so a lazy import cannot hide a cycle or a layer breach."""

import pytest

from lifecycle.release.codegraph import import_cycles, module_graph

pytestmark = pytest.mark.unit

# layer -> module prefixes it must never import
FORBIDDEN = {
    "quantize": ("lifecycle.train", "lifecycle.align", "lifecycle.eval", "lifecycle.data.synth", "lifecycle.release",
                 "serve"),
    "lifecycle.engine": ("quantize", "serve", "lifecycle.train"),
    "lifecycle.engines": ("quantize", "serve", "lifecycle.train"),
    "lifecycle.loading": ("quantize", "serve", "lifecycle.train", "lifecycle.eval"),
    "lifecycle.artifact": ("quantize", "serve", "lifecycle.train"),
    "lifecycle.train": ("quantize", "serve", "lifecycle.release"),
    "lifecycle.eval": ("quantize", "lifecycle.train", "lifecycle.release"),
    "serve": ("lifecycle.train", "lifecycle.align", "lifecycle.release", "perf"),
    # bench and load tests drive a server over HTTP; of serve they may read only the backend registry
    "perf": ("serve", "lifecycle.train", "lifecycle.align", "lifecycle.release"),
}
# layer -> modules it may import although a FORBIDDEN prefix covers them ("serve" is its docstring-only
# __init__, which any import of serve.backends runs)
ALLOWED = {"perf": ("serve", "serve.backends")}


def test_no_import_cycles():
    assert import_cycles() == []


def test_layers_import_only_downward():
    """Command modules (`*.cli`) sit on top and may call any layer; everything else keeps to its own."""
    graph = module_graph()
    breaches = [f"{m} -> {d}" for m, deps in graph.items() if not m.endswith(".cli")
                for layer, bad in FORBIDDEN.items() if m == layer or m.startswith(layer + ".")
                for d in deps if d.startswith(bad) and d not in ALLOWED.get(layer, ())]
    assert breaches == []


def test_perf_and_serve_stay_apart():
    """perf reaches serve only through its backend registry, and serve never reaches perf (cli modules too)."""
    graph = module_graph()
    assert any(m.startswith("perf.") for m in graph), "perf is missing from codegraph.PACKAGES"
    perf_uses = {d for m, deps in graph.items() if m.startswith("perf") for d in deps if d.split(".")[0] == "serve"}
    assert perf_uses <= set(ALLOWED["perf"])
    assert not [m for m, deps in graph.items() if m.startswith("serve") for d in deps if d.split(".")[0] == "perf"]
