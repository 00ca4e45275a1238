"""The shape of ``app/``: no import cycles, low-level modules import nothing above them, small files.

The import graph is read from the source with ``ast`` (every ``import``, at the top or inside a
function), so a cycle hidden by a late import is still a cycle here.
"""
import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"

# Modules that must not import Flask or anything of the app above them: the framework-free core.
LOW_LEVEL = {"app.errors", "app.config", "app.cpu", "app.memory", "app.download", "app.selection", "app.compose", "app.imaging", "app.guided_filter", "app.refine"}
CORE = LOW_LEVEL | {"app.params", "app.pipeline", "app.engines", "app.engines.base"}
# A module longer than this says at its top why it is long.
MAX_LINES = 400


def module_name(path):
    """``app/engines/base.py`` → ``app.engines.base``; a package's ``__init__`` is the package."""
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def app_modules():
    """``{module name: path}`` for every module under app/."""
    return {module_name(p): p for p in sorted(APP.rglob("*.py"))}


def imports_of(name, path, known):
    """The app modules that ``name`` imports (absolute and relative imports, resolved)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # ``from . import api`` names a module; ``from .errors import X`` names its members.
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in known else stem for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph():
    """``{module: set of app modules it imports}``."""
    modules = app_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if nxt == "app":
                continue  # the package itself (create_app): importing it runs no sibling
            if state.get(nxt) == "open":
                return trail[trail.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, trail + [nxt])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_the_graph_reader_sees_relative_and_late_imports():
    graph = import_graph()
    assert "app.errors" in graph["app.pipeline"] or "app.params" in graph["app.pipeline"]
    assert "app.service" in graph["app.api"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_in_app():
    cycle = find_cycle(import_graph())
    assert cycle is None, " → ".join(cycle)


@pytest.mark.parametrize("name", sorted(CORE))
def test_core_modules_do_not_import_the_web_layer(name):
    graph = import_graph()
    if name not in graph:
        pytest.skip(f"{name} does not exist")
    path = app_modules()[name]
    source = path.read_text()
    assert "import flask" not in source and "from flask" not in source, f"{name} imports Flask"
    allowed = CORE if name not in LOW_LEVEL else LOW_LEVEL
    above = {m for m in graph[name] if m not in allowed and not m.startswith("app.engines.")}
    assert not above, f"{name} imports {sorted(above)}, which sit above it"


def test_long_modules_say_why():
    for name, path in app_modules().items():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_LINES:
            head = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "long" in head.lower(), f"{name} has {len(lines)} lines and its docstring does not say why it is long"


def test_no_module_shadows_the_standard_library():
    import sys

    for name in app_modules():
        leaf = name.rsplit(".", 1)[-1]
        assert leaf not in sys.stdlib_module_names, f"{name} shadows the standard library's {leaf}"
