"""Icinga 2's certificates are verified the same way by every statesync client, on every Python
the project allows (``requires-python`` admits 3.13).

Python 3.13's ``ssl.create_default_context`` turns on ``VERIFY_X509_STRICT`` (and
``VERIFY_X509_PARTIAL_CHAIN``), and strict mode refuses certificates without key identifiers,
which is how Icinga 2 issues them. The suite runs on an older Python, so these tests give
``create_default_context`` 3.13's flags and then handshake with a real Icinga 2 master: the
restart trigger once built its own default context and refused Icinga here, the enrolment
client did not. Both now share ``statesync.icinga.api.tls_context``.

The master's CN is ``localhost``: the restart trigger checks the certificate against the host
of ``guard.api_url``, and ``localhost`` is the one name both resolvable and in the certificate.
"""
from __future__ import annotations

import secrets
import socket
import ssl

import pytest

from statesync.enrol.icinga_api import IcingaApi
from statesync.guard.triggers import ApiTrigger
from statesync.icinga.api import tls_context

from .. import icinga
from ..icinga import Node
from ..support import free_ports, wait_for

PASSWORD = "root-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def master(tmp_path_factory, icinga_root):
    icinga.require_nodes(icinga_root)
    (port,) = free_ports(1)
    node = Node("localhost", "master", str(tmp_path_factory.mktemp("icinga-tls") / "localhost"), port,
                "t-" + secrets.token_hex(3), icinga_root=icinga_root)
    icinga.provision_master(node, [], "root", PASSWORD)
    try:
        node.start()
        yield node
    finally:
        killed = node.stop()
        assert not killed, f"Icinga 2 had to be killed: {killed}"


def _api_up(node: Node) -> bool:
    return icinga.Api(node, "root", PASSWORD).up()


def test_the_context_for_icinga_clears_strict_x509_mode_that_python_3_13_sets_by_default(python_313_defaults, tmp_path):
    from .. import certs
    ca = tmp_path / "ca.crt"
    ca.write_bytes(certs.make_ca("Icinga CA").pem)
    assert ssl.create_default_context().verify_flags & ssl.VERIFY_X509_STRICT  # the simulation holds
    ctx = tls_context(str(ca))
    assert not ctx.verify_flags & ssl.VERIFY_X509_STRICT
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


@pytest.mark.e2e
def test_strict_x509_mode_refuses_the_certificate_a_real_icinga_2_presents(master, python_313_defaults):
    """The premise: without clearing the flag, Python 3.13 could not talk to Icinga 2 at all."""
    ctx = ssl.create_default_context(cafile=str(master.ca_cert()))
    with socket.create_connection(("127.0.0.1", master.api_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            ctx.wrap_socket(raw, server_hostname="localhost")
    assert "key identifier" in info.value.verify_message.lower(), info.value.verify_message


@pytest.mark.e2e
def test_the_enrolment_client_verifies_a_real_icinga_2_under_python_3_13_defaults(master, python_313_defaults):
    with IcingaApi(f"https://127.0.0.1:{master.api_port}", "root", PASSWORD, str(master.ca_cert()),
                   server_name="localhost") as api:
        assert "_api" in api.packages()


@pytest.mark.e2e
def test_the_restart_trigger_verifies_a_real_icinga_2_under_python_3_13_defaults(master, python_313_defaults):
    trigger = ApiTrigger(f"https://localhost:{master.api_port}", "root", PASSWORD, str(master.ca_cert()), timeout=10)
    trigger.prepare()
    assert trigger.fire() == f"POST https://localhost:{master.api_port}/v1/actions/restart-process answered 200"
    # Icinga 2 restarts now; the fixture stops the new process, once it is up.
    wait_for(lambda: _api_up(master), 60, what="Icinga 2 back after the restart", details=master.log_tail, step=0.2)
