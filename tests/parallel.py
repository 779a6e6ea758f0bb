"""How the suite shares this machine under pytest-xdist (scripts/test.sh: `-n N --dist loadgroup`,
then the serial pass). tests/conftest.py imports these hooks.

- `--serial skip|only`: a test marked `serial` measures a process's peak memory, so it runs alone,
  in a pass of its own after the parallel one; plain `pytest` runs everything, as before.
- Groups, each kept on one worker in collection order: every engine test ("engine": they share
  one Docker daemon, and swarm mode is the machine's), and the tests of a module with a module-
  or class-scoped fixture (made once, as without xdist; the e2e scenarios also build on each
  other). A module whose module-scoped fixture is parametrized (the Icinga 2 version matrix,
  tests/e2e/conftest.py) is one group per parameter: the versions spread over the workers.
  Every other test goes to whichever worker is free.
- xdist's own loadgroup reads `xdist_group` marks by appending "@group" to the node id, which
  pytest 9.2's structured node ids silently ignore (pytest-xdist#1386: nothing is grouped). So
  each worker writes the groups it collected to a file and the controller's scheduler reads it.
- A test module's terminal-summary plugin (the e2e and engine phase times) runs on a worker,
  whose output nobody sees: the worker records the lines and the controller prints them.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import pytest

GROUPS = "statesync_groups"
SUMMARY = "statesync_summary"


def pytest_addoption(parser):
    parser.addoption("--serial", choices=("with", "skip", "only"), default="with",
                     help="tests marked serial (they measure peak memory): run them with the rest "
                          "(default), leave them out, or run only them")


_SHARED = ("module", "class", "package")


def _shares_a_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    defs = (info.name2fixturedefs.get(name) for name in item.fixturenames)
    return any(d and d[-1].scope in _SHARED for d in defs)


def _shared_params(item: pytest.Item) -> str:
    """The parameters of ``item``'s shared fixtures, e.g. "[icinga_root=2.14]": each value makes a
    fixture instance of its own, so a group of its own."""
    callspec, info = getattr(item, "callspec", None), getattr(item, "_fixtureinfo", None)
    if callspec is None or info is None:
        return ""
    out = []
    for name in sorted(callspec.params):
        defs = info.name2fixturedefs.get(name)
        if defs and defs[-1].scope in _SHARED:
            out.append(f"[{name}={callspec.params[name]}]")
    return "".join(out)


def group_of(item: pytest.Item) -> str | None:
    """The group that keeps ``item`` on one worker with others, or None (any worker)."""
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    if item.get_closest_marker("engine") is not None:
        return "engine"
    if _shares_a_fixture(item):
        return item.nodeid.split("::", 1)[0] + _shared_params(item)
    return None


def select(config, items) -> None:
    """`--serial`: deselect the serial tests (skip) or all others (only). Call after marking."""
    serial = config.getoption("serial")
    if serial == "with":
        return
    keep = [item for item in items if (item.get_closest_marker("serial") is None) == (serial == "skip")]
    if len(keep) < len(items):
        kept = set(keep)
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = keep


def record_groups(config, items) -> None:
    """On a worker: write each grouped test's group where the controller's scheduler reads it."""
    where = getattr(config, "workerinput", {}).get(GROUPS)
    if not where:
        return
    groups = {item.nodeid: g for item in items if (g := group_of(item)) is not None}
    path = os.path.join(where, config.workerinput["workerid"] + ".json")
    with open(path + ".tmp", "w") as fh:
        json.dump(groups, fh)
    os.rename(path + ".tmp", path)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    config = node.config
    if not hasattr(config, "_statesync_groups"):
        config._statesync_groups = tempfile.mkdtemp(prefix="statesync-xdist-")
    node.workerinput[GROUPS] = config._statesync_groups


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Groups(LoadScopeScheduling):
        """Loadgroup by the groups the workers wrote; a test without one is a scope of its own."""

        def __init__(self, config, log):
            super().__init__(config, log)
            self.groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # first called once every worker has collected
                self.groups = {}
                where = config._statesync_groups
                for name in sorted(os.listdir(where)):
                    if name.endswith(".json"):
                        with open(os.path.join(where, name)) as fh:
                            self.groups.update(json.load(fh))
            group = self.groups.get(nodeid)
            return f"group:{group}" if group is not None else nodeid

    return Groups(config, log)


def pytest_unconfigure(config):
    where = getattr(config, "_statesync_groups", None)
    if where:
        shutil.rmtree(where, ignore_errors=True)


class _Recorder:
    def __init__(self):
        self.lines: list[list[str]] = []

    def write_sep(self, sep, title="", **_):
        self.lines.append(["sep", sep, title])

    def write_line(self, line, **_):
        self.lines.append(["line", line])


_from_workers: list[list[str]] = []


def pytest_sessionfinish(session):
    config = session.config
    if not hasattr(config, "workerinput"):
        return
    recorder = _Recorder()
    for plugin in config.pluginmanager.get_plugins():
        if type(plugin).__module__.startswith("tests.") and hasattr(plugin, "pytest_terminal_summary"):
            plugin.pytest_terminal_summary(terminalreporter=recorder)
    config.workeroutput[SUMMARY] = recorder.lines


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    _from_workers.extend(getattr(node, "workeroutput", {}).get(SUMMARY, []))


def pytest_terminal_summary(terminalreporter):
    for kind, *rest in _from_workers:
        if kind == "sep":
            terminalreporter.write_sep(*rest)
        else:
            terminalreporter.write_line(*rest)
