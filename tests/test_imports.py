"""The house's one-way streets: tinylm's import graph (module-level and function-local imports alike, read by
``ast``) has no cycle, and no library module imports the CLI; reproduce's own graph has no cycle either."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tinylm"
EXPERIMENTS = PACKAGE.parent / "reproduce"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports anywhere in its body (``from a.b import c`` counts as
    ``a.b.c`` when that is a module, else ``a.b``)."""
    modules = {module_name(path, package): path for path in package.rglob("*.py")}
    prefix = package.name

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(known(alias.name) for alias in node.names if alias.name.startswith(prefix))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(prefix):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else known(node.module))
        graph[name] = {t for t in targets if t and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
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


def test_tinylm_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_reproduce_has_no_import_cycle():
    """The experiments share a contract, a runner and each other's steps (the ladder compacts its source as
    ``reproduce.inheritance`` does) without a module reaching back up."""
    assert cycles(import_graph(EXPERIMENTS)) == []


def test_no_library_module_imports_the_cli():
    offenders = {name: sorted(t for t in targets if t.startswith("tinylm.cli"))
                 for name, targets in import_graph().items() if not name.startswith("tinylm.cli")}
    assert {name: t for name, t in offenders.items() if t} == {}


def test_the_checks_see_a_cycle_and_a_cli_import(tmp_path):
    """The two checks above can fail: a cycle hidden in a function and a library module reaching the CLI."""
    package = tmp_path / "tinylm"
    (package / "cli").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli" / "__init__.py").write_text("")
    (package / "a.py").write_text("from tinylm.b import f\n")
    (package / "b.py").write_text("def f():\n    from tinylm.a import g  # hidden in a function\n    import tinylm.cli\n")
    graph = import_graph(package)
    assert cycles(graph) == [["tinylm.a", "tinylm.b"]]
    assert "tinylm.cli" in graph["tinylm.b"]


@pytest.mark.parametrize("stage", ["model", "artifacts", "data", "vocab", "training", "inherit", "evaluation", "pro",
                                   "cli"])
def test_the_folders_are_the_stages(stage):
    assert (PACKAGE / stage / "__init__.py").is_file()
