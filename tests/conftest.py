from __future__ import annotations

import inspect
import itertools
import os
import ssl
from pathlib import Path

import pytest

from statesync import config
from statesync.consul.store import Store
from statesync.repo.repository import Repo

from .parallel import (  # noqa: F401 (pytest hooks: how the suite shares the machine under xdist)
    pytest_addoption,
    pytest_configure_node,
    pytest_sessionfinish,
    pytest_terminal_summary,
    pytest_testnodedown,
    pytest_unconfigure,
    pytest_xdist_make_scheduler,
    record_groups,
    select,
)
from .support import ConsulAgent, find_consul

_counter = itertools.count()

# The fixtures that start a real Consul, container engine or Icinga 2, by where they are
# defined (a module may define a stand-in under the same name: test_guard_preflight's
# `engine`), and the marker a test using one must carry. A test uses a fixture when it is
# among the fixtures it asks for, directly or through other fixtures.
_STARTS = {
    ("conftest.py", "consul_bin"): "consul",
    ("conftest.py", "consul"): "consul",
    ("conftest.py", "acl_consul"): "consul",
    ("conftest.py", "engine"): "engine",
    ("conftest.py", "icinga_root"): "e2e",
    ("test_e2e_icinga.py", "cluster"): "e2e",
    ("test_enrol_icinga_api.py", "master"): "e2e",
}


def _starts(item: pytest.Item) -> set[str]:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return set()
    found = set()
    for name in item.fixturenames:
        defs = info.name2fixturedefs.get(name)
        if not defs:
            continue
        source = inspect.getsourcefile(defs[-1].func) or ""  # the last is the one the test gets
        marker = _STARTS.get((Path(source).name, name))
        if marker:
            found.add(marker)
    return found


# pytest-timeout's backstop (pyproject.toml: 900 s) for tests that may legitimately take longer
# on a loaded machine, unless a test sets its own @pytest.mark.timeout. The engine's first test
# also pays for `engine`'s setup, which may install the engine and build the images (bounded by
# tests/engine.py at 600 + 1800 s) and test_swarm_engine's image build (300 + 900 s).
_LONGER = {"engine": 3600, "slow": 1800}


def pytest_collection_modifyitems(config, items):
    """Mark each test by what its fixtures start, so that `-m "not consul and not engine and not
    e2e"` selects the unit tier: tests that need nothing but Python and the file system."""
    for item in items:
        have = {m.name for m in item.iter_markers()}
        for marker in sorted(_starts(item) - have):
            item.add_marker(marker)
            have.add(marker)
        longer = [seconds for marker, seconds in _LONGER.items() if marker in have]
        if longer and "timeout" not in have:
            item.add_marker(pytest.mark.timeout(max(longer)))
    select(config, items)
    record_groups(config, items)


@pytest.fixture(scope="session")
def consul_bin() -> str:
    binary = find_consul()
    if binary is None:
        pytest.fail("no consul binary: run scripts/setup.sh (or set STATESYNC_CONSUL_BIN)")
    return binary


@pytest.fixture(scope="session")
def consul(consul_bin, tmp_path_factory):
    """One dev agent for the whole session, on free loopback ports."""
    agent = ConsulAgent(consul_bin, dev=True, workdir=str(tmp_path_factory.mktemp("consul")))
    agent.start()
    yield agent
    agent.cleanup()


@pytest.fixture
def prefix() -> str:
    """A KV prefix of the test's own, so tests sharing the agent never see each other."""
    return f"test/{os.getpid()}-{next(_counter)}"


@pytest.fixture
def make_cfg(consul, prefix, tmp_path):
    """Build a Config for the session agent; keyword arguments are setting overrides."""
    def build(**overrides):
        flags = {"root": str(tmp_path / "root"), "prefix": prefix, "node": "node1",
                 "consul.addr": [consul.addr], "log.format": "json", "allow_plaintext_secrets": True}
        flags.update({k.replace("__", "."): v for k, v in overrides.items()})
        return config.load(flags, env={})
    return build


@pytest.fixture
def repo_for():
    def build(cfg: config.Config) -> Repo:
        return Repo(Store(cfg.consul), cfg.layout, cfg.chunk_size, cfg.keep)
    return build


@pytest.fixture(scope="session")
def acl_consul(consul_bin, tmp_path_factory, request):
    """One dev agent with ACLs on and default deny, shared by the security tests."""
    from .acl_support import AclConsul
    agent = AclConsul(consul_bin, str(tmp_path_factory.mktemp("consul-acl")))
    request.addfinalizer(agent.stop)
    return agent.start()


@pytest.fixture(scope="session")
def engine():
    """The real container engine with the stand-in images built (tests/engine.py).

    A test that asks for it fails when the engine cannot be brought up: it never skips.
    """
    from .engine import Engine, EngineError, ensure_engine
    try:
        ensure_engine()
    except EngineError as exc:
        pytest.fail(f"container engine unavailable: {exc}", pytrace=False)
    return Engine()


@pytest.fixture
def python_313_defaults(monkeypatch):
    """``ssl.create_default_context`` as Python 3.13 builds it, on any Python: strict X.509 (which
    refuses certificates without key identifiers, as Icinga 2 issues them) and partial chains on
    by default."""
    original = ssl.create_default_context

    def strict(*args, **kwargs):
        ctx = original(*args, **kwargs)
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
        return ctx

    monkeypatch.setattr(ssl, "create_default_context", strict)
