"""No import cycle between rivertrio's modules, type-only imports included.

A cycle works at run time only as long as each module happens to touch the
other's names late enough; the first module-level use breaks it, and a
type-only cycle is a dependency a reader has to hold in mind all the same. The
graph is read from the source with `ast`, so imports inside functions and under
``if TYPE_CHECKING:`` count too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

# Read from the tree, not imported: the graph is there even when an import fails.
ROOT = Path(__file__).resolve().parents[2] / "src" / "rivertrio"
PACKAGE = "rivertrio"


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The package's modules that `name` imports, anywhere in its source.

    ``import a.b`` and ``from a import b`` where ``b`` is a submodule are edges
    to ``a.b``; ``from a import x`` where ``x`` is a name in ``a`` is an edge to
    ``a`` (its ``__init__`` for a package). Importing a subpackage's module runs
    the subpackage's ``__init__`` first, so that is an edge too, unless `name`
    is inside that package itself (its own packages are always initialised
    first: a package importing its submodules is no cycle).
    """
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _with_parents(name, alias.name, modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".")
                if not is_package:
                    package.pop()
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield from _with_parents(name, submodule if submodule in modules else base, modules)


def _with_parents(importer: str, target: str, modules: dict[str, Path]) -> Iterator[str]:
    """`target` if it is one of the package's modules, with the packages above it
    that `importer` is not inside."""
    if target not in modules:
        return
    yield target
    parts = target.split(".")
    for end in range(1, len(parts)):
        parent = ".".join(parts[:end])
        if not (importer == parent or importer.startswith(parent + ".")):
            yield parent


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {
        name: set(imported_modules(name, path, modules)) - {name} for name, path in modules.items()
    }


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cycles(graph: dict[str, set[str]], limit: int = 200) -> list[list[str]]:
    """The elementary cycles, each starting at its smallest module (at most `limit`)."""
    result: list[list[str]] = []
    for component in strongly_connected(graph):
        members = set(component)
        for start in component:
            # Only cycles whose smallest module is `start`: each is found once.
            allowed = {m for m in members if m >= start}
            path = [start]

            def extend(node: str, allowed: set[str] = allowed, path: list[str] = path) -> None:
                for nxt in sorted(graph[node] & allowed):
                    if len(result) >= limit:
                        return
                    if nxt == path[0]:
                        result.append([*path, nxt])
                    elif nxt not in path:
                        path.append(nxt)
                        extend(nxt)
                        path.pop()

            extend(start)
    return result


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph()
    # A plain relative import, a package's __init__, a submodule named in
    # `from pkg import name`, and a type-only import.
    assert "rivertrio._exceptions" in graph["rivertrio._service"]
    assert "rivertrio._driver" in graph["rivertrio._notifier"]
    assert "rivertrio._maintenance._rescuer" in graph["rivertrio._maintenance"]
    assert "rivertrio._job" in graph["rivertrio._retry"]  # under TYPE_CHECKING
    # A subpackage's module brings the subpackage's __init__ with it.
    assert {"rivertrio._driver._completer", "rivertrio._driver"} <= graph["rivertrio._completer"]
    assert "rivertrio" not in graph["rivertrio._cli.worker"]


def test_cycle_finder_names_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, f"{len(found)} import cycle(s) in src/rivertrio:\n" + "\n".join(
        "  " + " -> ".join(cycle) for cycle in found
    )
