"""Pinning the parent's certificate for the next enrolment: only a certificate the published CA
issued is ever written, and the guard sends a node to enrol again only once its parent presents
one. A real TLS server on 127.0.0.1 stands in for the parent's API port; Consul is real."""
from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import sys
import threading
from pathlib import Path

import pytest
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from statesync.consul.store import Store
from statesync.errors import ParentNotVerified, ParentUnreachable, StatesyncError
from statesync.guard import parent, triggers
from statesync.guard.ca_watch import Guard
from statesync.guard.logic import Verdict
from statesync.guard.parent import fetch_parent_cert, pin_at_startup, pin_parent
from statesync.pki.chain import verify_issued_by

from ..certs import NOW, enrol, make_ca
from ..guardkit import APPEND, fired, publish, quarantines
from ..support import free_ports, wait_for


def leaf(ca, cn: str = "master1", kind: str = "ec", start: dt.datetime | None = None, days: int = 365,
         issuer: x509.Name | None = None) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) for ``cn`` signed by ``ca``'s key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" else \
        ec.generate_private_key(ec.SECP256R1())
    start = start or NOW - dt.timedelta(days=1)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer or ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days)).sign(ca.key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()), cert.public_bytes(serialization.Encoding.PEM))


class Parent:
    """A TLS server on 127.0.0.1 presenting ``present(ca)``'s leaf; counts completed handshakes."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.ctx: ssl.SSLContext | None = None
        self.pem = b""
        self.handshakes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def present(self, ca, n: int = 0) -> bytes:
        key, cert = leaf(ca)
        (self.workdir / f"parent{n}.key").write_bytes(key)
        (self.workdir / f"parent{n}.crt").write_bytes(cert)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.workdir / f"parent{n}.crt", self.workdir / f"parent{n}.key")
        self.ctx, self.pem = ctx, cert
        return cert

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(5)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.handshakes += 1
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.listener.close()


@pytest.fixture
def parent_server(tmp_path):
    server = Parent(tmp_path)
    yield server
    server.close()


def _cfg(make_cfg, tmp_path, address: str, **overrides):
    settings = dict(role="satellite", node="sat1", guard__trigger="command",
                    guard__command=[sys.executable, "-c", APPEND, str(tmp_path / "fired")],
                    guard__confirmations=1, guard__confirm_interval=0.05, guard__check_interval=0.3,
                    guard__parent_host=address, guard__trusted_parent_file=str(tmp_path / "trusted-parent.crt"))
    settings.update(overrides)
    return make_cfg(**settings)


# --- verify_issued_by, pure ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_a_leaf_the_ca_signed_verifies(kind):
    ca = make_ca(kind=kind)
    assert verify_issued_by(leaf(ca, kind=kind)[1], ca.pem, NOW.timestamp()) == ""
    assert verify_issued_by(leaf(ca, kind=kind)[1], ca.pem, NOW) == ""


def test_a_leaf_of_another_ca_is_refused_naming_both_issuers():
    ca, other = make_ca("Icinga CA", kind="rsa"), make_ca("Other CA", kind="rsa")
    why = verify_issued_by(leaf(other, kind="rsa")[1], ca.pem, NOW.timestamp())
    assert "issued by 'CN=Other CA', not by 'CN=Icinga CA'" in why


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_a_leaf_naming_the_ca_but_signed_by_another_key_is_refused(kind):
    ca, impostor = make_ca("Icinga CA", kind=kind), make_ca("Icinga CA", kind=kind)
    why = verify_issued_by(leaf(impostor, kind=kind)[1], ca.pem, NOW.timestamp())
    assert "signature does not verify" in why


def test_a_leaf_signed_with_a_key_of_another_type_is_refused():
    ca, impostor = make_ca("Icinga CA", kind="ec"), make_ca("Icinga CA", kind="rsa")
    assert "signature" in verify_issued_by(leaf(impostor)[1], ca.pem, NOW.timestamp())


def test_an_expired_or_not_yet_valid_leaf_is_refused():
    ca = make_ca(kind="rsa")
    expired = leaf(ca, kind="rsa", start=NOW - dt.timedelta(days=30), days=10)[1]
    assert "expired at" in verify_issued_by(expired, ca.pem, NOW.timestamp())
    future = leaf(ca, start=NOW + dt.timedelta(days=3))[1]
    assert "not valid before" in verify_issued_by(future, ca.pem, NOW.timestamp())


def test_junk_is_refused_in_one_line():
    ca = make_ca()
    assert verify_issued_by(b"junk", ca.pem, NOW.timestamp()) == "the parent's certificate does not parse as PEM"
    assert verify_issued_by(leaf(ca)[1], b"junk", NOW.timestamp()) == "the CA certificate does not parse as PEM"


# --- fetching and pinning ---------------------------------------------------------------------

def test_the_parent_certificate_is_fetched_without_verifying_the_handshake(parent_server):
    presented = parent_server.present(make_ca())
    assert fetch_parent_cert(parent_server.address, 5).strip() == presented.strip()


def test_an_unreachable_parent_is_one_line():
    with pytest.raises(ParentUnreachable, match="unreachable") as info:
        fetch_parent_cert(f"127.0.0.1:{free_ports(1)[0]}", 2)
    assert "\n" not in str(info.value)


def test_a_parent_that_never_answers_the_handshake_times_out_within_the_bound():
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(ParentUnreachable, match="within 0.5s"):
            fetch_parent_cert(f"127.0.0.1:{silent.getsockname()[1]}", 0.5)
    finally:
        silent.close()


def test_a_parent_of_the_published_ca_is_pinned_mode_0644(make_cfg, tmp_path, parent_server):
    ca = make_ca()
    presented = parent_server.present(ca)
    cfg = _cfg(make_cfg, tmp_path, parent_server.address)
    path = pin_parent(cfg, ca.pem)
    assert path == tmp_path / "trusted-parent.crt"
    assert path.read_bytes().strip() == presented.strip()
    assert path.stat().st_mode & 0o777 == 0o644 and path.stat().st_uid == os.geteuid()


def test_the_pin_goes_to_the_root_when_no_file_is_configured(make_cfg, tmp_path, parent_server):
    ca = make_ca()
    parent_server.present(ca)
    cfg = _cfg(make_cfg, tmp_path, parent_server.address, guard__trusted_parent_file="")
    (tmp_path / "root").mkdir()
    assert pin_parent(cfg, ca.pem) == tmp_path / "root/.statesync-parent.crt"


def test_a_parent_of_another_ca_is_refused_and_nothing_is_written(make_cfg, tmp_path, parent_server):
    parent_server.present(make_ca("Other CA"))
    cfg = _cfg(make_cfg, tmp_path, parent_server.address)
    (tmp_path / "trusted-parent.crt").write_bytes(b"the pin before")
    with pytest.raises(ParentNotVerified, match="not by 'CN=Icinga CA'"):
        pin_parent(cfg, make_ca().pem)
    assert (tmp_path / "trusted-parent.crt").read_bytes() == b"the pin before"
    assert [p.name for p in tmp_path.iterdir() if "trusted-parent" in p.name] == ["trusted-parent.crt"]


# --- the guard waits for its parent -------------------------------------------------------------

@pytest.mark.consul
def test_a_ca_change_is_not_acted_on_until_the_parent_presents_a_certificate_of_the_new_ca(
        make_cfg, tmp_path, parent_server):
    old, new = make_ca(), make_ca()
    parent_server.present(old)  # the master has not switched yet
    cfg = _cfg(make_cfg, tmp_path, parent_server.address, guard__purge_window=600)
    guard = Guard(cfg, Store(cfg.consul), triggers.from_settings(cfg.guard))
    files = enrol(guard.root, old)
    publish(guard.store, guard.key, new)
    with structlog.testing.capture_logs() as logs:
        assert guard.check("test").verdict is Verdict.MISMATCH
        assert guard.check("test").verdict is Verdict.MISMATCH
    assert quarantines(guard.root) == [] and fired(tmp_path / "fired") == 0
    assert all((guard.root / "certs" / name).read_bytes() == data for name, data in files.items())
    assert not (tmp_path / "trusted-parent.crt").exists()
    waits = [e for e in logs if e["event"] == "parent does not present a certificate of the published CA yet; "
                                              "not purging"]
    assert len(waits) == 2 and all(e["log_level"] == "warning" for e in waits)
    # The master switches: the next check pins its new certificate, then purges and restarts.
    presented = parent_server.present(new, 1)
    assert guard.check("test").verdict is Verdict.MISMATCH
    assert (tmp_path / "trusted-parent.crt").read_bytes().strip() == presented.strip()
    assert len(quarantines(guard.root)) == 1 and fired(tmp_path / "fired") == 1


@pytest.mark.consul
def test_a_pin_inside_certs_is_not_moved_into_the_quarantine(make_cfg, tmp_path, parent_server):
    old, new = make_ca(), make_ca()
    presented = parent_server.present(new)
    cfg = _cfg(make_cfg, tmp_path, parent_server.address,
               guard__trusted_parent_file=str(tmp_path / "root/certs/trusted-parent.crt"))
    guard = Guard(cfg, Store(cfg.consul), triggers.from_settings(cfg.guard))
    enrol(guard.root, old)
    publish(guard.store, guard.key, new)
    assert guard.check("test").verdict is Verdict.MISMATCH
    assert fired(tmp_path / "fired") == 1
    assert (guard.root / "certs/trusted-parent.crt").read_bytes().strip() == presented.strip()
    assert not (guard.root / "certs/ca.crt").exists()


# --- pinning at start-up, before the first enrolment ------------------------------------------------

@pytest.mark.consul
def test_pinning_at_startup_retries_until_the_parent_presents_a_certificate_of_the_published_ca(
        make_cfg, tmp_path, parent_server, monkeypatch):
    monkeypatch.setattr(parent, "BACKOFF_FIRST", 0.05)
    monkeypatch.setattr(parent, "BACKOFF_MAX", 0.1)
    published = make_ca()
    parent_server.present(make_ca("Old CA"))
    cfg = _cfg(make_cfg, tmp_path, parent_server.address)
    store = Store(cfg.consul)
    stop = threading.Event()
    with structlog.testing.capture_logs() as logs:
        worker = threading.Thread(target=pin_at_startup, args=(cfg, store, stop), daemon=True)
        worker.start()
        try:
            wait_for(lambda: any("no CA is published" in e.get("error", "") for e in logs), 120,
                     what="no CA published yet", step=0.01)
            publish(store, cfg.layout.ca, published)
            wait_for(lambda: parent_server.handshakes >= 3, 120, what="three refused handshakes", step=0.01)
            assert not (tmp_path / "trusted-parent.crt").exists()
            presented = parent_server.present(published, 1)
            worker.join(10)
            assert not worker.is_alive()
        finally:
            stop.set()
            worker.join(10)
    assert (tmp_path / "trusted-parent.crt").read_bytes().strip() == presented.strip()
    retries = [e for e in logs if e["event"] == "cannot pin the parent's certificate yet; retrying"]
    assert len(retries) == 2  # once per kind: nothing published, then a parent of another CA
    assert any(e["event"] == "parent's certificate pinned for the enrolment" for e in logs)


@pytest.mark.consul
def test_pinning_at_startup_does_nothing_on_an_enrolled_node(make_cfg, tmp_path, parent_server):
    ca = make_ca()
    parent_server.present(ca)
    cfg = _cfg(make_cfg, tmp_path, parent_server.address, roots="state=var/lib/icinga2")
    enrol(cfg.state_dir, ca)
    store = Store(cfg.consul)
    publish(store, cfg.layout.ca, ca)
    pin_at_startup(cfg, store, threading.Event())
    assert parent_server.handshakes == 0 and not (tmp_path / "trusted-parent.crt").exists()


@pytest.mark.consul
def test_pinning_at_startup_does_nothing_without_a_parent_and_ends_when_stopped(make_cfg, tmp_path, parent_server):
    cfg = _cfg(make_cfg, tmp_path, "")
    pin_at_startup(cfg, Store(cfg.consul), threading.Event())
    parent_server.present(make_ca("Other CA"))
    cfg = _cfg(make_cfg, tmp_path, parent_server.address)
    store = Store(cfg.consul)
    publish(store, cfg.layout.ca, make_ca())
    stop = threading.Event()
    worker = threading.Thread(target=pin_at_startup, args=(cfg, store, stop), daemon=True)
    worker.start()
    wait_for(lambda: parent_server.handshakes >= 1, 120, what="a refused handshake", step=0.01)
    stop.set()
    worker.join(5)
    assert not worker.is_alive() and not (tmp_path / "trusted-parent.crt").exists()


def test_errors_of_the_parent_are_statesync_errors():
    assert issubclass(ParentUnreachable, StatesyncError) and issubclass(ParentNotVerified, StatesyncError)
