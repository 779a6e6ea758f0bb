"""The package layout is the architecture: imports run one way, and only one package speaks Consul.

docs/ARCHITECTURE.md states the rules these tests hold the code to.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "statesync"

# What each package may import from statesync, besides itself. The top-level modules
# ``errors``, ``fsutil``, ``metrics``, ``disk``, ``jsonload`` and ``tlsclient`` are the base
# every layer may use; ``config`` is the frozen settings object, handed down from the command layer to what
# runs the engine.
BASE = {"errors", "fsutil", "metrics", "disk", "jsonload", "tlsclient"}
ALLOWED = {
    "cli": {"sidecar", "guard", "enrol", "restore", "repo", "tree", "snapshot", "pki", "consul", "config", "__init__"},
    "sidecar": {"guard", "enrol", "restore", "repo", "tree", "snapshot", "pki", "consul", "config"},
    "enrol": {"icinga", "repo", "tree", "snapshot", "pki", "consul", "config"},
    "guard": {"icinga", "repo", "tree", "snapshot", "pki", "consul", "config", "schema"},
    "restore": {"repo", "tree", "snapshot", "pki", "consul"},
    "repo": {"tree", "snapshot", "consul"},
    # the local tree read into the format: beside snapshot/, never below it
    "tree": {"snapshot"},
    "snapshot": set(),
    "pki": {"snapshot"},
    "consul": set(),
    "icinga": set(),
    # config reads the sources against schema and builds each package's settings type by name;
    # it imports no package that imports it (see test_no_package_imports_itself_through_a_circle)
    "config": {"tree", "snapshot", "consul.settings", "parsing", "schema"},
    "schema": {"snapshot", "consul.settings", "parsing", "parsing_icinga"},
    "parsing": {"tree", "snapshot", "consul.settings"},
    "parsing_icinga": set(),
    "errors": set(), "fsutil": set(), "metrics": set(), "disk": set(), "jsonload": set(), "tlsclient": set(),
    "__main__": {"cli"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(("statesync", *parts))] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[str]:
    """Every module ``name`` imports, at any depth of the file (lazy imports included), fully qualified."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from pkg import submodule`` imports the submodule
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in MODULES]
            found += subs or [mod]
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _area(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def _allowed(src: str, dst: str) -> bool:
    a, b = _area(src), _area(dst)
    if a == b or b in BASE:
        return True
    rules = ALLOWED[a]
    sub = ".".join(dst.split(".")[1:3])
    return b in rules or sub in rules


def test_only_the_consul_package_imports_the_client_library():
    offenders = sorted(name for name, deps in GRAPH.items()
                       if any(d == "consul" or d.startswith("consul.") for d in deps)
                       and not name.startswith("statesync.consul"))
    assert offenders == []


def test_every_import_runs_down_the_layers():
    wrong = sorted(f"{src} -> {dst}" for src, deps in GRAPH.items() for dst in deps
                   if dst.startswith("statesync") and not _allowed(src, dst))
    assert wrong == []


def test_no_module_imports_itself_through_a_circle():
    graph = {n: {d for d in deps if d in MODULES and d != n} for n, deps in GRAPH.items()}
    # a package's __init__ is imported by its modules implicitly; our __init__s import nothing
    assert _cycles(graph) == []


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}
    cycles = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    return cycles


def test_no_package_imports_itself_through_a_circle():
    """Each subpackage is one node, each top-level module (config, schema, parsing, errors, ...)
    another. config -> enrol.settings -> guard.settings, with guard.ca_watch -> config, was such a
    circle (config -> enrol -> guard -> config) although no module imported itself."""
    graph: dict[str, set[str]] = {}
    for src, deps in GRAPH.items():
        graph.setdefault(_area(src), set()).update(
            _area(d) for d in deps if d in MODULES and _area(d) != _area(src))
    assert _cycles(graph) == []


@pytest.mark.parametrize("package", sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")))
def test_each_package_says_in_a_paragraph_what_it_is_for(package):
    init = PACKAGE / package / "__init__.py"
    tree = ast.parse(init.read_text())
    doc = ast.get_docstring(tree) or ""
    assert len(doc.split()) >= 40, f"{package}/__init__.py needs a paragraph saying what the package is for"
    assert [n for n in tree.body if not isinstance(n, ast.Expr)] == [], "package __init__s hold only their docstring"


def test_no_module_grows_past_a_few_hundred_lines():
    long = sorted(f"{p.relative_to(PACKAGE)}: {n}" for p in PACKAGE.rglob("*.py")
                  if (n := len(p.read_text().splitlines())) > 450)
    assert long == []


def test_only_the_command_layer_prints():
    """The packages below cli/ return data and cli/ formats it, so one module holds each command's output."""
    printing = sorted(f"{p.relative_to(PACKAGE)}:{n.lineno}" for p in PACKAGE.rglob("*.py")
                      if p.relative_to(PACKAGE).parts[0] != "cli"
                      for n in ast.walk(ast.parse(p.read_text()))
                      if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print")
    assert printing == []
