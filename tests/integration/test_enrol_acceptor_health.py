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

    from ..certs import make_ca
    from ..support import free_ports

    monkeypatch.setattr(acceptor_module, "FAILING_FOR", 1.0)  # a minute in production: a reload must not flap /healthz
    root = tmp_path / "root"
    (root / "ca").mkdir(parents=True)
    (root / "ca/ca.crt").write_bytes(make_ca("Icinga CA").pem)
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
