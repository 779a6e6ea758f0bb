from __future__ import annotations

import itertools
import os

import pytest

from statesync import config
from statesync.consul.store import Store
from statesync.repo.repository import Repo

from .support import ConsulAgent, find_consul

_counter = itertools.count()


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
