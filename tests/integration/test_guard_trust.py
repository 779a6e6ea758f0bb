"""The CA guard acts only on a published CA worth acting on, and only future-proof quarantine
dates count: a real `statesync run --role satellite` and `statesync check-ca` against the real Consul."""
from __future__ import annotations

import datetime as dt
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from statesync import config
from statesync.consul.store import Store
from statesync.disk import QUARANTINE_DIR
from statesync.pki import fingerprint

from ..certs import CERT_FILES, NOW, enrol, make_ca, sign
from ..guardkit import fired, publish, quarantines, satellite_env
from ..sidecar import Sidecar
from ..support import clean_env, free_ports, http_get, statesync_cmd, wait_for

pytestmark = pytest.mark.consul


class _Pem:
    def __init__(self, pem: bytes):
        self.pem = pem


def _leaf():
    """A certificate that is no CA at all (no basicConstraints CA:TRUE)."""
    return _Pem(sign(make_ca(), "not-a-ca.example")[1])


def _badly_self_signed():
    """A certificate claiming a CA's subject and CA:TRUE, signed by another key than its own."""
    own, signer = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Icinga CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(own.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(signer, hashes.SHA256()))
    return _Pem(cert.public_bytes(serialization.Encoding.PEM))


def _expired():
    return make_ca(start=NOW - dt.timedelta(days=400), days=365)


def _store(addr: str, prefix: str) -> tuple[Store, str]:
    cfg = config.load({"prefix": prefix, "node": "x", "consul.addr": [addr]}, env={})
    return Store(cfg.consul), cfg.layout.ca


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _check_ca(addr: str, prefix: str, root) -> subprocess.CompletedProcess:
    env = clean_env()
    env.update(CONSUL_HTTP_ADDR=addr, STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root), STATESYNC_NODE="sat1",
               STATESYNC_LOG_FORMAT="json")
    return subprocess.run(statesync_cmd("check-ca"), env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("make, why", [(_leaf, "not a CA certificate"),
                                       (_badly_self_signed, "self-signature does not verify"),
                                       (_expired, "expired at")], ids=["leaf", "badly-self-signed", "expired"])
def test_a_published_certificate_with_another_key_that_is_no_usable_ca_is_never_purged_for(
        consul, prefix, tmp_path, make, why):
    root, marker = tmp_path / "root", tmp_path / "fired"
    store, key = _store(consul.addr, prefix)
    ca = make_ca()
    files = enrol(root, ca)
    publish(store, key, ca)
    (port,) = free_ports(1)
    sat = Sidecar.start(consul.addr, prefix, root, root.parent / "sidecar-sat1.log", "sat1", "satellite",
                        **satellite_env(marker, STATESYNC_HTTP_PORT=str(port)))
    try:
        seen = fingerprint.cert_sha256(ca.pem)
        wait_for(lambda: any(e.get("published_ca_cert_sha256") == seen for e in sat.events("CA check")), 120,
                 what="satellite started", step=0.05)
        bad = make()
        publish(store, key, bad)
        bad_sha = fingerprint.cert_sha256(bad.pem)
        # the watch reacts at once, then one periodic check a second: three checks outlast a confirmation
        wait_for(lambda: len([e for e in sat.events("CA check") if e.get("published_ca_cert_sha256") == bad_sha]) >= 3,
                 120, what="three checks of the bad certificate", step=0.05)
        assert fired(marker) == 0 and quarantines(root) == []
        assert all((root / "certs" / n).read_bytes() == files[n] for n in CERT_FILES)
        errors = [e for e in sat.events("CA check") if e.get("level") == "error"]
        assert errors and why in errors[0]["reason"] and errors[0]["verdict"] == "cannot-tell"
        assert _metric(http_get(port, "/metrics")[1], "statesync_guard_untrusted_ca_total") >= 3
        done = _check_ca(consul.addr, prefix, root)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "result:    cannot-tell: the published CA is not trusted" in done.stdout and why in done.stdout
    finally:
        assert sat.stop() == 0
    assert all((root / "certs" / n).read_bytes() == files[n] for n in CERT_FILES)


def test_a_quarantine_directory_dated_2099_no_longer_blocks_a_purge(consul, prefix, tmp_path):
    root, marker = tmp_path / "root", tmp_path / "fired"
    store, key = _store(consul.addr, prefix)
    ca = make_ca()
    enrol(root, ca)
    (root / QUARANTINE_DIR / "20990101T000000.000000Z").mkdir(parents=True)
    publish(store, key, ca)
    sat = Sidecar.start(consul.addr, prefix, root, root.parent / "sidecar-sat1.log", "sat1", "satellite", **satellite_env(marker))  # purge_window 600
    try:
        seen = fingerprint.cert_sha256(ca.pem)
        wait_for(lambda: any(e.get("published_ca_cert_sha256") == seen for e in sat.events("CA check")), 120,
                 what="satellite started", step=0.05)
        publish(store, key, make_ca())
        wait_for(lambda: fired(marker) == 1, 120, what="the purge and the trigger",
                 details=lambda: sat.log.read_text()[-2000:])
        assert len(quarantines(root)) == 2
        future = [e for e in sat.events() if "dated in the future" in e.get("event", "")]
        assert future and future[0]["level"] == "error" and future[0]["names"] == ["20990101T000000.000000Z"]
    finally:
        sat.stop()
