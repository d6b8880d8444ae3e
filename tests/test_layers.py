"""The layers point one way (shared/ARCHITECTURE.md, docs/architecture.md): checked on the import graph,
function-level imports included, so a lazy import cannot hide a cycle or a layer breach."""

from lifecycle.release.codegraph import import_cycles, module_graph

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
    "serve": ("lifecycle.train", "lifecycle.align", "lifecycle.release"),
}


def test_no_import_cycles():
    assert import_cycles() == []


def test_layers_import_only_downward():
    """Command modules (`*.cli`) sit on top and may call any layer; everything else keeps to its own."""
    graph = module_graph()
    breaches = [f"{m} -> {d}" for m, deps in graph.items() if not m.endswith(".cli")
                for layer, bad in FORBIDDEN.items() if m == layer or m.startswith(layer + ".")
                for d in deps if d.startswith(bad)]
    assert breaches == []
