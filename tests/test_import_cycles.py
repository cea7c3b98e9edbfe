"""No import circle in the core or the runner.

Every import counts: at module level, inside functions (imported late to keep the CLI fast) and
under ``TYPE_CHECKING``. A module that imports a package's ``__init__`` depends on it; a package's
``__init__`` depends on the submodules it imports. Read from the source with `ast`, so the check
needs neither package installed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"triadapt": ROOT / "packages/triadapt/src", "triadapt_runner": ROOT / "packages/triadapt-runner/src"}


def module_graph(source: Path, package: str) -> dict[str, set[str]]:
    """Module name -> the modules of the same package it imports."""
    files = {}
    for path in (source / package).rglob("*.py"):
        parts = list(path.relative_to(source).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
                edges.add(base)
                edges |= {f"{base}.{alias.name}" for alias in node.names}
        graph[name] = {edge for edge in edges if edge in files and edge != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle(package: str) -> None:
    graph = module_graph(PACKAGES[package], package)
    assert len(graph) > 10, "the source was not found"
    found = cycles(graph)
    detail = ["  " + " <-> ".join(c) + ": " + "; ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c)
              for c in found]
    assert not found, "import circles:\n" + "\n".join(detail)


def test_the_check_finds_a_circle(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text('"""A package whose modules import each other."""\n')
    (package / "a.py").write_text("def f():\n    from pkg import b\n")
    (package / "b.py").write_text("from . import a\n")
    (package / "c.py").write_text("from pkg.a import f\n")
    assert cycles(module_graph(tmp_path, "pkg")) == [["pkg.a", "pkg.b"]]
