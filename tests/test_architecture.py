"""The import structure runs one way: no cycle between first-party modules (outside
``TYPE_CHECKING``), ``results`` never imports the harness above its plain types, and no
first-party import hides in a function except where the README says why."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "methods", "tasks", "results", "dashboard")
# Function-level first-party imports that are on purpose: the CLI imports its commands'
# machinery (torch, transformers) only when a command needs it, so `harness --help` and
# `harness leaderboard` start without them.
LAZY_ALLOWED = {"harness/cli.py"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "export_template" in path.parts or "embedded" in path.parts:
                continue
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path, known: set[str]) -> tuple[set[str], list[tuple[int, str]]]:
    """(first-party modules imported at module level, (line, module) of those inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: set[str] = set()
    hidden: list[tuple[int, str]] = []

    def targets(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            return []
        return [name for name in names if name in known]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in targets(child):
                    (hidden.append((child.lineno, name)) if in_function else top.add(name))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return top, hidden


def graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[int, str]]]]:
    found = modules()
    known = set(found)
    edges, lazy = {}, {}
    for name, path in found.items():
        top, hidden = imports(path, known)
        edges[name] = {m for m in top if m != name}
        lazy[name] = hidden
    return edges, lazy


def test_no_import_cycle():
    edges, _ = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_results_depend_only_on_plain_types():
    edges, _ = graph()
    for name, targets in edges.items():
        if name.startswith("results."):
            harness = {t for t in targets if t.startswith("harness")}
            assert harness <= {"harness.types"}, (name, harness)


def test_no_first_party_import_hidden_in_a_function():
    _, lazy = graph()
    offenders = {name: hidden for name, hidden in lazy.items()
                 if hidden and str(modules()[name].relative_to(REPO)) not in LAZY_ALLOWED}
    assert not offenders, offenders
