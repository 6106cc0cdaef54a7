"""Imports run downhill: no module-level import cycle in ``src/mechscope``, and case studies layered.

A static check (``ast``, nothing is imported): an edge ``a -> b`` is an import of ``b`` that runs when ``a``
is imported (module level, including ``try``/``if`` blocks; ``if TYPE_CHECKING:`` blocks are skipped, and
imports inside functions are lazy and allowed). ``from pkg import name`` is an edge to ``pkg.name`` when
that is a module, else to ``pkg`` itself (its ``__init__``). A cycle is a strongly connected component of
more than one module. Case-study packages ``experiments/<study>/`` must also import only downhill among
their role modules, ``config <- run <- analysis <- report``, lazy imports included.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import mechscope

SRC = Path(mechscope.__file__).parent
ROLES = ("config", "run", "analysis", "report")
"""The role modules of a case study, lowest first: each may import only the ones before it."""


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``) for every ``.py`` under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level(body: Iterable[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run at import time (not in functions or classes, not TYPE_CHECKING-only)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level(block)
        elif isinstance(node, ast.With):
            yield from _module_level(node.body)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_pkg: bool, mods: dict[str, tuple[Path, bool]]
             ) -> set[str]:
    """The known modules an import statement loads."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in mods}
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return {f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names} & set(mods)


def import_graph(root: Path, *, lazy: bool = False) -> dict[str, set[str]]:
    """Module -> modules it imports at import time (``lazy=True``: every import statement, anywhere)."""
    mods = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = ([n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))] if lazy
                 else list(_module_level(tree.body)))
        graph[name] = {t for n in nodes for t in _targets(n, name, is_pkg, mods)} - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def _describe(comp: list[str], graph: dict[str, set[str]]) -> str:
    edges = [f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in comp]
    return "; ".join(edges)


def test_no_module_level_import_cycle_in_mechscope() -> None:
    graph = import_graph(SRC)
    assert len(graph) > 100 and "mechscope.dictionaries.io" in graph["mechscope.dictionaries.train.trainer"]
    found = cycles(graph)
    assert not found, ("module-level import cycles (move what both need into a third module below them, or make "
                       "one import lazy): " + " | ".join(_describe(c, graph) for c in found))


def test_case_studies_import_downhill_config_run_analysis_report() -> None:
    graph = import_graph(SRC, lazy=True)
    studies = sorted({m.rsplit(".", 1)[0] for m in graph
                      if m.startswith("mechscope.experiments.") and m.rsplit(".", 1)[1] in ROLES})
    assert {"mechscope.experiments.grokking", "mechscope.experiments.induction",
            "mechscope.experiments.superposition"} <= set(studies)
    upward = [f"{study}.{a} imports {study}.{b}"
              for study in studies for i, a in enumerate(ROLES) for b in ROLES[i + 1:]
              if f"{study}.{b}" in graph.get(f"{study}.{a}", set())]
    assert not upward, f"case-study modules must import downhill (config <- run <- analysis <- report): {upward}"
    into_package = [f"{study}.{role} imports {study}" for study in studies for role in ROLES
                    if study in graph.get(f"{study}.{role}", set())]
    assert not into_package, f"role modules import their siblings, not the package __init__: {into_package}"
    below = [f"{m} imports {t}" for m, ts in graph.items() for t in ts
             if t.startswith("mechscope.experiments.") and not m.startswith(("mechscope.experiments",
                                                                              "mechscope.cli", "mechscope.web"))
             and not m.startswith("mechscope.toy.report")]  # a deprecated alias of the superposition report
    assert not below, f"a lower layer imports a case study: {below}"


def test_the_checker_finds_module_level_cycles_and_ignores_lazy_and_type_checking(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "from pkg.b import x\n",
        "b.py": "x = 1\ntry:\n    from pkg import a\nexcept ImportError:\n    pass\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.d import y\n",
        "d.py": "from pkg.c import *\ny = 2\ndef f():\n    from pkg.e import z\n",
        "e.py": "from .d import y\nz = 3\n",
        "sub/__init__.py": "from .m import w\n",
        "sub/m.py": "from .. import e\nw = 4\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.c"] == set() and graph["pkg.d"] == {"pkg.c"} and graph["pkg.e"] == {"pkg.d"}
    assert graph["pkg.sub"] == {"pkg.sub.m"} and graph["pkg.sub.m"] == {"pkg.e"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    lazy = import_graph(pkg, lazy=True)
    assert sorted(cycles(lazy)) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d", "pkg.e"]]
