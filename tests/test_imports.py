"""The package's import graph: no cycles anywhere in jelm, generic packages name no
domain, and ``jelm.sim`` stands alone.

The graph is read from the source (every ``import`` and ``from ... import`` at any depth
of a module, lazy ones included), so it also catches cycles that only close when a
function runs.
"""

from __future__ import annotations

import ast
import gc
import subprocess
import sys
from pathlib import Path

import jelm

ROOT = Path(jelm.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p
        for p in ROOT.rglob("*.py")
        if "seeds" not in p.relative_to(ROOT).parts  # program texts, not jelm's modules
    }


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:`` (never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The jelm modules ``name`` imports (a package's ``__init__`` counts as imported
    with any of its submodules)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    # CPython 3.11's ast.parse raises a spurious SystemError ("AST constructor recursion
    # depth mismatch") when a garbage collection inside it runs code that parses too, as
    # pytest's hook for unraisable exceptions does when it formats a traceback: collect
    # first, and not while parsing
    gc.collect()
    gc.disable()
    try:
        return {name: _imports(name, path, known) for name, path in modules.items()}
    finally:
        gc.enable()


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None (iterative depth-first search)."""
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child) :], child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def test_the_graph_reader_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_in_jelm():
    """Submodules importing their own package's ``__init__`` are not counted as cycles
    (``jelm.domains`` importing ``jelm.domains.base`` and back is how packages work)."""
    graph = _graph()
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    assert _cycle(graph) is None


def test_generic_packages_import_no_domain():
    """qd, mutation, lm and programs know a domain only through jelm.domains' protocol
    and registry, never by importing a domain's package."""
    graph = _graph()
    generic = ("jelm.qd", "jelm.mutation", "jelm.lm", "jelm.programs", "jelm.io")
    offenders = {
        name: sorted(t for t in targets if t.startswith("jelm.domains."))
        for name, targets in graph.items()
        if name.startswith(generic)
    }
    allowed = {"jelm.domains.base"}
    assert {k: [t for t in v if t not in allowed] for k, v in offenders.items() if v} == {
        k: [] for k, v in offenders.items() if v
    }


def test_sim_imports_nothing_else_of_jelm():
    graph = _graph()
    outside = {
        name: sorted(t for t in targets if not t.startswith("jelm.sim") and t != "jelm")
        for name, targets in graph.items()
        if name.startswith("jelm.sim")
    }
    assert {k: v for k, v in outside.items() if v} == {}


def test_import_jelm_sim_loads_neither_qdax_nor_transformers():
    code = (
        "import sys, jelm.sim; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('qdax', 'transformers', "
        "'flax', 'optax')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
