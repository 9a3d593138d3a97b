"""The project's modules import each other without cycles, and private names stay home.

Every import counts, those inside functions too, except imports under ``if TYPE_CHECKING:``
(they never run). Importing ``a.b.c`` runs the ``__init__`` of ``a.b`` first, so an import
also depends on the packages above its target, but not on the importer's own enclosing
packages (Python has loaded them before the importer runs).
"""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the installed package name of each top-level source folder (pyproject's package-dir)
FOLDERS = {"accelir": "accelir", "passes": "accelir.passes", "lowering": "accelir.lowering"}


def _modules() -> dict[str, str]:
    mods = {}
    for folder, package in FOLDERS.items():
        base = os.path.join(ROOT, folder)
        for dirpath, dirnames, files in os.walk(base):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for f in files:
                if not f.endswith(".py"):
                    continue
                parts = os.path.relpath(os.path.join(dirpath, f), base)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                mods[".".join([package] + parts)] = os.path.join(dirpath, f)
    return mods


def _runtime_imports(tree: ast.AST):
    """Import statements that can run: all of them but those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for m, path in mods.items():
        package = m if path.endswith("__init__.py") else m.rpartition(".")[0]
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in _runtime_imports(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
                if base in mods and base != m:
                    private += [f"{m}:{node.lineno} imports {a.name} from {base}" for a in node.names
                                if a.name.startswith("_") and not a.name.startswith("__")]
            for t in targets:
                for dep in [t] + _ancestors(t):
                    if dep in mods and dep != m and dep not in _ancestors(m):
                        edges[m].add(dep)
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
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


def test_no_import_cycle():
    edges, _ = _graph()
    assert len(edges) > 100  # the walk found the project
    assert _cycles(edges) == []


def test_no_private_name_is_imported_across_modules():
    _, private = _graph()
    assert private == []


def test_the_cycle_finder_finds_cycles():
    edges = {"p": {"p.a"}, "p.a": set(), "q": {"p.b"}, "p.b": {"q"}}
    assert _cycles(edges) == [["p.b", "q"]]
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycles(edges) == [["a", "b", "c"]]
