"""The shape of the package, checked from its source (docs/architecture.md):
no import circles, handlers that reach the backends only through the service,
modules of a readable size. Every import counts, including those made under
``TYPE_CHECKING`` or inside a function: a circle hidden there is still one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "uploader"
MAX_LINES = 400
# The Python client is one standard-library file people may copy on its own.
SIZE_EXEMPT = {"client.py"}
BACKENDS = ("uploader.store", "uploader.storage", "uploader.locks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (an ``import a.b`` of a
    module counts as importing ``a.b``; ``from a import b`` counts ``a.b`` when
    that is a module, else ``a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_resolves_relative_imports() -> None:
    edges = graph()
    assert "uploader.service" in edges["uploader.handlers.uploads"] or \
        "uploader.handlers.base" in edges["uploader.handlers.uploads"]
    assert "uploader.storage.base" in edges["uploader.storage.local"]


def test_no_import_circle() -> None:
    assert circles(graph()) == []


def test_handlers_reach_backends_only_through_the_service() -> None:
    edges = graph()
    for name, targets in edges.items():
        if not name.startswith("uploader.handlers"):
            continue
        assert not [t for t in targets if t.startswith(BACKENDS)], name
        tree = ast.parse(modules()[name].read_text())
        touched = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not touched & {"store", "storage", "locks", "runtime"}, name


def test_backends_know_no_http() -> None:
    edges = graph()
    for name, path in modules().items():
        if name.startswith(BACKENDS):
            assert "tornado" not in path.read_text(), name
            assert not [t for t in edges[name] if t.startswith("uploader.handlers")], name


def test_modules_stay_small() -> None:
    big = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES and p.name not in SIZE_EXEMPT}
    assert big == {}
