"""The master's acceptor reports its own failures: a pass that fails by surprise is no healthy master."""
from __future__ import annotations

import pytest

from statesync import config
from statesync.consul.store import Store
from statesync.enrol.master import Acceptor

from .support import wait_for

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
        problem = wait_for(acceptor.problem, 30, what="the acceptor reporting its failed pass", step=0.05)
    finally:
        acceptor.stop()
    assert "failed unexpectedly" in problem and "IsADirectoryError" in problem, problem
    assert "secret" not in problem
