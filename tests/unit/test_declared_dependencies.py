"""statesync imports only the standard library and what pyproject.toml declares: an import of a
package that happens to be installed here (as ``requests`` was) fails on a clean install."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _declared_modules() -> set[str]:
    """The top-level modules the declared distributions install, read from their file lists
    (python-consul2's top_level.txt is wrong, so packages_distributions() misses ``consul``)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    modules = set()
    for dep in project["dependencies"]:
        dist = importlib.metadata.distribution(re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0])
        for file in dist.files or ():
            top = file.parts[0]
            if not top.endswith((".dist-info", ".egg-info", ".data")) and top != "..":
                modules.add(top.removesuffix(".py"))
    return modules


def _top_level_imports() -> dict[str, str]:
    """Each absolute import's top-level module, with the first file that imports it."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "statesync").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_statesync_imports_nothing_but_the_standard_library_and_its_declared_dependencies():
    declared = _declared_modules()
    undeclared = {module: where for module, where in _top_level_imports().items()
                  if module not in declared | {"statesync"} and module not in sys.stdlib_module_names}
    assert undeclared == {}


def test_the_dependency_scan_sees_the_imports_and_the_modules_of_the_declared_packages():
    # The scan above is only worth something if it finds the modules statesync does import.
    imports = _top_level_imports()
    assert {"consul", "cryptography", "structlog", "http"} <= imports.keys()
    assert {"consul", "cryptography", "structlog"} <= _declared_modules()
    assert "requests" not in imports
