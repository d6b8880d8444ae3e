"""The project's own source a stage depends on, found by following its imports.

    files = closure(["lifecycle.train.sft"])      # sft.py and every project module it imports, transitively
    source_hash(files)                            # part of the stage's cache key

Imports are read with `ast` from the source, at module level and inside functions alike (the project
imports heavy libraries lazily, so most of its imports are function-level), and so are the "module:Name"
strings the registries import on demand (engines, eval task types, align methods). Only the project's packages are
followed; third-party libraries enter a key by version instead. Reading every import of a module is an
over-approximation (a function the stage never calls still counts), which errs on the side of re-running:
editing any module a stage could reach makes that stage, and everything after it, run again.
"""

from __future__ import annotations

import ast
import hashlib
import re
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("lifecycle", "quantize", "serve", "perf", "deploy")
REGISTRY_TARGET = re.compile(r"^((?:%s)(?:\.\w+)+)(?::\w+)+$" % "|".join(PACKAGES))  # "pkg.mod:Name[:fn]"


def module_file(name: str) -> Path | None:
    """The source file of a project module (a package's __init__.py), or None if it is not ours."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


@lru_cache(maxsize=None)
def direct_imports(path: Path, registries: bool = True) -> tuple[str, ...]:
    """Project modules imported anywhere in `path` (absolute and relative imports, `from x import y` tried
    as both the module x.y and the module x), plus registry targets unless `registries` is False."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path).split(".")
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif registries and isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and REGISTRY_TARGET.match(node.value):
            names = [REGISTRY_TARGET.match(node.value).group(1)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = here if is_package else here[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            for k in range(len(parts), 0, -1):  # `import a.b.c` also runs a/__init__ and a/b/__init__
                if module_file(".".join(parts[:k])):
                    found.add(".".join(parts[:k]))
    return tuple(sorted(found))


def closure(modules: list[str] | tuple[str, ...], skip_registries: tuple[str, ...] = ()) -> tuple[Path, ...]:
    """Source files of `modules` and of every project module they import, transitively. The registry
    strings of the modules in `skip_registries` are not followed (e.g. the engine registry, when the
    caller adds the one engine it uses)."""
    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name)
        if path is None:
            continue
        seen[name] = path
        todo.extend(direct_imports(path, name not in skip_registries))
        parts = name.split(".")
        todo.extend(".".join(parts[:k]) for k in range(1, len(parts)))  # parent packages run first
    return tuple(sorted(set(seen.values())))


def source_hash(files: tuple[Path, ...]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def module_graph() -> dict[str, set[str]]:
    """Every project module -> the project modules it imports (registry strings excluded: they are data)."""
    graph = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = _module_name(f)
            # importing a module runs its parent packages' __init__ first: that is not a dependency cycle
            graph[name] = {d for d in direct_imports(f, False) if d != name and not name.startswith(d + ".")}
    return graph


def import_cycles() -> list[list[str]]:
    """Groups of modules that import each other, directly or through others (strongly connected components)."""
    graph = module_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the graph is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles
