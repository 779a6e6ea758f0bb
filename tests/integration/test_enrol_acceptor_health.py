"""The master's acceptor reports its own failures: a pass that fails by surprise is no healthy master."""
from __future__ import annotations

import pytest

from statesync import config
from statesync.consul.store import Store
from statesync.enrol.acceptor import Acceptor

from ..support import wait_for

pytestmark = pytest.mark.consul


def test_a_pass_that_fails_unexpectedly_makes_the_acceptor_report_a_problem_for_healthz(consul, prefix, tmp_path):
    # Old code: the thread logged the failure and problem() stayed "", so /healthz answered 200.
    root = tmp_path / "root"
    (root / "ca/ca.crt").mkdir(parents=True)  # a directory where the CA certificate belongs: no expected error
    (root / "ca/ca.key").write_text("the CA master's key\n")  # this master is the one that accepts
    password = tmp_path / "api-password"
    password.write_text("secret\n")
    cfg = config.load({"root": str(root), "prefix": prefix, "node": "master1", "consul.addr": [consul.addr],
                       "role": "master", "enrol.enabled": True, "enrol.api_password_file": str(password),
                       "enrol.interval": 0.2, "allow_plaintext_secrets": True}, env={})
    acceptor = Acceptor(cfg, Store(cfg.consul))
    assert acceptor.problem() == ""
    acceptor.start()
    try:
        problem = wait_for(acceptor.problem, 120, what="the acceptor reporting its failed pass", step=0.05)
    finally:
        acceptor.stop()
    assert "failed unexpectedly" in problem and "IsADirectoryError" in problem, problem
    assert "secret" not in problem


def test_passes_that_keep_failing_are_reported_once_they_outlast_a_reload(consul, prefix, tmp_path, monkeypatch):
    from statesync.enrol import acceptor as acceptor_module

    from ..certs import _pem_key, make_ca
    from ..support import free_ports

    monkeypatch.setattr(acceptor_module, "FAILING_FOR", 1.0)  # a minute in production: a reload must not flap /healthz
    root = tmp_path / "root"
    (root / "ca").mkdir(parents=True)
    ca = make_ca("Icinga CA")
    (root / "ca/ca.crt").write_bytes(ca.pem)
    (root / "ca/ca.key").write_bytes(_pem_key(ca.key))  # this master is the one that accepts
    password = tmp_path / "api-password"
    password.write_text("secret\n")
    (port,) = free_ports(1)  # nothing listens: what a missing permission or a wrong URL also looks like, for ever
    cfg = config.load({"root": str(root), "prefix": prefix, "node": "master1", "consul.addr": [consul.addr],
                       "role": "master", "enrol.enabled": True, "enrol.api_password_file": str(password),
                       "enrol.api_url": f"https://127.0.0.1:{port}", "allow_plaintext_secrets": True}, env={})
    acceptor = Acceptor(cfg, Store(cfg.consul))
    acceptor.start()
    try:
        problem = wait_for(acceptor.problem, 120, what="the acceptor reporting its failing passes", step=0.05)
    finally:
        acceptor.stop()
    assert "every pass has failed" in problem and f"127.0.0.1:{port}" in problem and "secret" not in problem, problem


def test_a_master_without_the_ca_key_stands_by_stays_healthy_and_says_so(consul, prefix, tmp_path):
    """The second master of an HA zone: node setup against the first leaves it no ca/ at all."""
    # Old code: every pass raised "ca/ca.crt does not exist: this node has no CA to sign with", so
    # after FAILING_FOR the second master's /healthz answered 503 for ever.
    from statesync.enrol import acceptor as acceptor_module

    root = tmp_path / "root"
    (root / "certs").mkdir(parents=True)  # what node setup leaves on the second master: certs/, no ca/
    password = tmp_path / "api-password"
    password.write_text("secret\n")
    cfg = config.load({"root": str(root), "prefix": prefix, "node": "master2", "consul.addr": [consul.addr],
                       "role": "master", "enrol.enabled": True, "enrol.api_password_file": str(password),
                       "allow_plaintext_secrets": True}, env={})
    acceptor = Acceptor(cfg, Store(cfg.consul))
    state = acceptor.reconcile()
    assert state.standby and not state.error and acceptor.problem() == ""
    assert "standing by" in acceptor.note() and "ca/ca.key" in acceptor.note()
    assert state.accepted == () and state.signed == [] and acceptor_module.STANDBY_RECHECK < cfg.enrol.interval
