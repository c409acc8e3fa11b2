"""Every module of ``softseg`` and ``napari_softseg`` imports, and the import graph has no cycle.

The graph is built from the source (the AST of each module): an edge ``a -> b`` for every
``import``/``from ... import`` in ``a`` that names a module ``b`` of the two packages, at module
level **or inside a function** (a lazy import is still a dependency: two modules that import each
other lazily are one concept split in two, e.g. the Train and Predict widgets before issue 12).
Imports under ``if TYPE_CHECKING:`` are skipped (never executed). Importing a submodule also
imports its package; that implicit edge is not counted, so a package may re-export its submodules.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"softseg": ROOT / "src" / "softseg", "napari_softseg": ROOT / "napari_softseg"}

def _modules() -> dict[str, Path]:
    found = {}
    for pkg, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _known(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    out = []
    for alias in node.names:  # "from pkg import sub" names the submodule pkg.sub
        full = f"{base}.{alias.name}"
        out.append(full if full in MODULES else base)
    return out


def import_graph() -> dict[str, set[str]]:
    """The graph of the tree as it is now (modules are listed again: others may move files)."""
    global MODULES
    MODULES = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        deps = set()
        for node in _import_nodes(tree):
            for target in _targets(module, node):
                dep = _known(target)
                if dep is not None and dep != module:
                    deps.add(dep)
        graph[module] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_cycle_finder_finds_cycles():
    """The checker itself: a hand-made graph with one 3-cycle and a self-contained tail."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_parser_sees_lazy_and_relative_imports(tmp_path):
    src = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import softseg.card\n"
        "def f():\n    from softseg.training import trainer\n    from . import config\n"
    )
    tree = ast.parse(src)
    names = [t for node in _import_nodes(tree) for t in _targets("softseg.device", node)]
    assert "softseg.card" not in names and "softseg.training.trainer" in names and "softseg.config" in names


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.endswith("__main__")))
def test_every_module_imports(module):
    """(``__main__`` modules run the command when imported; the CLI tests run them.)"""
    importlib.import_module(module)


def test_import_graph_is_acyclic():
    """Issue 12: no import circle at all (no known exceptions: a cycle is fixed, not listed)."""
    assert cycles(import_graph()) == [], "import cycles (module groups that import each other)"
