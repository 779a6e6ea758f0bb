"""The one TLS client context (statesync/tlsclient.py) accepts certificates as Icinga 2 issues
them, without key identifiers, on the Python that runs the test and under Python 3.13's strict
default. scripts/test.sh runs this on 3.11 and on 3.13, where the default is real; with the flag
left to the interpreter, the handshake test fails on 3.13 ("Missing Authority Key Identifier").
"""
from __future__ import annotations

import ast
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from statesync.tlsclient import client_context

from ..certs import make_ca, sign

PACKAGE = Path(__file__).resolve().parents[2] / "statesync"


@pytest.fixture
def icinga_like_server(tmp_path):
    """A TLS server on 127.0.0.1 whose certificate, and its CA's, carry no key identifiers (as
    ``icinga2 pki`` makes them); serves handshakes until the test ends. Yields the CA file."""
    ca = make_ca("Icinga CA")
    key, cert, _ = sign(ca, "master1", ip="127.0.0.1", dns=("master1",))
    for pem in (ca.pem, cert):
        exts = {e.oid for e in x509.load_pem_x509_certificate(pem).extensions}
        assert not exts & {x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER, x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER}
    (tmp_path / "ca.crt").write_bytes(ca.pem)
    (tmp_path / "server.crt").write_bytes(cert)
    (tmp_path / "server.key").write_bytes(key)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"hello")
                except (OSError, ssl.SSLError):
                    pass  # the client refused the certificate: the test sees that side

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield str(tmp_path / "ca.crt"), listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(10)
        listener.close()


def _handshake(ctx: ssl.SSLContext, port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="master1") as tls:
            return tls.recv(5)


def test_the_context_verifies_an_icinga_certificate_on_this_python(icinga_like_server):
    ca, port = icinga_like_server
    assert _handshake(client_context(ca), port) == b"hello"


def test_the_context_verifies_it_under_python_3_13_defaults_too(icinga_like_server, python_313_defaults):
    ca, port = icinga_like_server
    ctx = client_context(ca)
    assert ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN and not ctx.verify_flags & ssl.VERIFY_X509_STRICT
    assert _handshake(ctx, port) == b"hello"


def test_strict_mode_refuses_the_certificate_so_clearing_it_is_what_makes_it_work(icinga_like_server):
    """The premise, on any Python: the flag 3.13 sets refuses Icinga's certificates."""
    ca, port = icinga_like_server
    ctx = ssl.create_default_context(cafile=ca)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    with pytest.raises(ssl.SSLCertVerificationError, match="(?i)key identifier"):
        _handshake(ctx, port)


def test_the_context_still_verifies_chain_and_host_name(icinga_like_server, tmp_path):
    ca, port = icinga_like_server
    ctx = client_context(ca)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    other = tmp_path / "other-ca.crt"
    other.write_bytes(make_ca("Icinga CA").pem)  # the same name, another key
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(client_context(str(other)), port)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="(?i)hostname"):
            ctx.wrap_socket(raw, server_hostname="satellite9")


def _contexts_built(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "ssl" \
                and node.func.attr in ("create_default_context", "SSLContext", "_create_unverified_context"):
            found.append(f"{path.relative_to(PACKAGE)}:ssl.{node.func.attr}")
    return found


def test_no_module_but_tlsclient_builds_a_verifying_tls_context():
    # guard/parent.py fetches the parent's certificate without verifying the handshake, on purpose:
    # pki.chain verifies what it got against the CA published in Consul (its docstring says why).
    found = sorted(hit for path in PACKAGE.rglob("*.py") if path.name != "tlsclient.py"
                   for hit in _contexts_built(path))
    assert found == ["guard/parent.py:ssl.SSLContext"]
