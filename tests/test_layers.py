"""The layers of docs/architecture.md, checked on the source: every import of every module in app/
(deferred imports inside functions included; `if TYPE_CHECKING:` blocks excluded, they never run)
must point in an allowed direction, and no module may import itself back through others."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"

# layer -> layers it must never import (a prefix of the module name)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "app.models": ("app.services", "app.engine", "app.resolvers", "app.schema", "app.tasks", "app.progress"),
    "app.engine": ("app.services", "app.resolvers", "app.schema", "app.tasks", "app.main"),
    "app.services": ("app.resolvers", "app.schema", "app.tasks", "app.main"),
    "app.progress": ("app.services", "app.engine", "app.resolvers", "app.schema", "app.tasks"),
    "app.schema": ("app.services", "app.engine", "app.tasks", "app.main"),
    "app.resolvers": ("app.engine", "app.tasks", "app.main"),
    "app.tasks": ("app.resolvers", "app.schema", "app.main"),
    # shared bottom modules: imported by every layer, so they import none of the layers above
    "app.metrics": ("app.services", "app.engine", "app.resolvers", "app.schema", "app.tasks"),
    "app.db": ("app.services", "app.engine", "app.resolvers", "app.schema", "app.tasks"),
    "app.errors": ("app.services", "app.engine", "app.resolvers", "app.schema", "app.tasks"),
    "app.settings": ("app.services", "app.engine", "app.resolvers", "app.schema", "app.tasks"),
    "app.runtime": ("app.services", "app.engine", "app.resolvers", "app.schema", "app.tasks"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in APP.rglob("*.py")}


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except the bodies of `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in (child, *_runtime_nodes(child)))
            continue
        yield node
        yield from _runtime_nodes(node)


def imports_of(name: str) -> set[str]:
    """The app modules `name` imports, each resolved to the module file it loads."""
    tree = ast.parse(MODULES[name].read_text())
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for target in targets:
            if target in MODULES:
                found.add(target)
            elif target.rsplit(".", 1)[0] in MODULES and target.startswith("app"):
                found.add(target.rsplit(".", 1)[0])
    found.discard(name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def test_imports_point_only_in_allowed_directions() -> None:
    wrong = []
    for name, targets in GRAPH.items():
        for layer, banned in FORBIDDEN.items():
            if name == layer or name.startswith(layer + "."):
                wrong += [f"{name} -> {t}" for t in targets if t.startswith(banned)]
    assert wrong == []


def test_no_import_cycles() -> None:
    # Tarjan's strongly connected components; a component of two or more modules is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(GRAPH):
        if name not in index:
            visit(name)
    assert cycles == []


def test_the_checker_sees_deferred_imports() -> None:
    """A guard on the guard: app.tasks.broker imports app.tasks.dispatch inside a function."""
    assert any(t.startswith("app.") for t in GRAPH["app.tasks.jobs"])
    assert "app.services" in {t.rsplit(".", 1)[0] for t in GRAPH["app.tasks.jobs"]}
