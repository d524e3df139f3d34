"""The layering rules of docs/architecture.md, read from the source's imports.

Every import in bus/ counts: module level, inside functions, and under
``TYPE_CHECKING``. The rules:

1. only ``bus.store`` imports redis-py;
2. ``bus.core`` imports nothing from ``bus.events``, ``bus.store``, ``bus.worker``;
3. no import cycle between modules of bus/;
4. no module of bus/ is over 450 lines.

Each rule lists the modules that still break it today, with what has to
happen to them. The lists only shrink: a module that newly breaks a rule
fails, and so does a listed module that no longer breaks it (take it off).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

BUS = Path(__file__).resolve().parent.parent / "bus"
MAX_LINES = 450

# Rule 1: modules outside bus.store that still import redis: none left (they
# hold bus.store.types clients and read through bus.store.reads).
REDIS_OUTSIDE_STORE: set[str] = set()

# Rule 2: (core module, what it imports).
CORE_EXCEPTIONS: set[tuple[str, str]] = set()

# Rule 3: the import cycles left, as sets of modules (the worker's owners of
# the layers issue undid the last one).
KNOWN_CYCLES: list[set[str]] = []

# Rule 4: modules still over MAX_LINES lines, to be split.
OVERSIZED: set[str] = set()


def _name(path: Path) -> str:
    parts = list(path.relative_to(BUS.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of bus/ by dotted name."""
    return {_name(p): p for p in sorted(BUS.rglob("*.py"))}


def _resolve(dotted: str) -> str:
    """The module of bus/ that ``dotted`` (a module or a name in one) lives in."""
    while dotted not in modules():
        dotted = dotted.rpartition(".")[0]
    return dotted


def imports(module: str) -> Iterator[str]:
    """Every top-level package or bus module ``module`` imports, anywhere in it."""
    for node in ast.walk(ast.parse(modules()[module].read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                yield _resolve(alias.name) if root == "bus" else root
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            root = node.module.split(".")[0]
            if root != "bus":
                yield root
                continue
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                yield full if full in modules() else _resolve(node.module)


@cache
def graph() -> dict[str, frozenset[str]]:
    """Module -> the bus modules it imports."""
    return {
        m: frozenset(d for d in imports(m) if d.startswith("bus") and d != m) for m in modules()
    }


def cycles(edges: dict[str, frozenset[str]] | None = None) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan).

    Over bus/'s import graph, or over ``edges`` (the reader's own check).
    """
    edges = graph() if edges is None else edges
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_only_the_store_imports_redis() -> None:
    """redis-py is imported in bus.store, and in the listed modules not moved there yet."""
    users = {m for m in modules() if "redis" in set(imports(m))}
    outside = {m for m in users if m != "bus.store" and not m.startswith("bus.store.")}
    assert sorted(outside - REDIS_OUTSIDE_STORE) == [], "new redis imports outside bus.store"
    assert sorted(REDIS_OUTSIDE_STORE - outside) == [], "no longer import redis: unlist them"


def test_core_imports_nothing_from_events_store_or_worker() -> None:
    """The task model stands alone, but for the listed imports still to be moved."""
    above = ("bus.events", "bus.store", "bus.worker")
    found = {
        (m, d)
        for m, deps in graph().items()
        if m.startswith("bus.core")
        for d in deps
        if d.startswith(above) or d == "bus"
    }
    assert sorted(found - CORE_EXCEPTIONS) == []
    assert sorted(CORE_EXCEPTIONS - found) == [], "no longer imported: unlist them"


def test_no_import_cycle_but_the_listed_ones() -> None:
    """No cycle between modules of bus/, TYPE_CHECKING and function imports included."""
    found = cycles()
    assert [c for c in found if c not in KNOWN_CYCLES] == []
    assert [c for c in KNOWN_CYCLES if c not in found] == [], "cycle gone: unlist it"


def test_no_module_is_over_450_lines_but_the_listed_ones() -> None:
    """Modules stay small; the listed ones are still to be split."""
    sizes = {m: len(p.read_text().splitlines()) for m, p in modules().items()}
    over = {m for m, n in sizes.items() if n > MAX_LINES}
    assert {m: sizes[m] for m in sorted(over - OVERSIZED)} == {}
    assert sorted(OVERSIZED - over) == [], "now small enough: unlist them"


def test_the_import_reader_sees_imports_in_functions_and_type_checking() -> None:
    """The rules would be hollow if the reader missed lazy or typing-only imports."""
    assert "bus.demo.run" in graph()["bus.cli.demo_cmd"]  # imported inside run()
    assert "bus.events.publish_results" in graph()["bus.client"]  # under TYPE_CHECKING only
    assert "bus.core.enqueue" in graph()["bus.events.declarations"]  # the same
    loop = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset()}
    assert cycles(loop) == [{"a", "b", "c"}]
    assert cycles({**loop, "c": frozenset({"d"})}) == []
