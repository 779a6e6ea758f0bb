"""The satellite's side of enrolment through Consul (enrol/enroller.py) against the real Consul:
one ``Enroller.step()`` at a time on a tree laid out as ``icinga2 node setup`` leaves it."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from statesync import config
from statesync.consul.store import Store
from statesync.enrol import registration
from statesync.enrol.enroller import (
    ENROLLED,
    NO_REQUEST,
    OTHER_CA,
    REGISTERED,
    WAITING_CA,
    Enroller,
)
from statesync.guard.logic import Verdict, decide
from statesync.pki import cadoc, fingerprint

from ..certs import NOW, make_ca, pending_request, sign

pytestmark = pytest.mark.consul

CN = "sat1"


class Sat:
    """A satellite's root (certs/ only), its config, its store, and what Consul holds for it."""

    def __init__(self, consul, prefix: str, base: Path, **settings):
        self.root = base / "root"
        self.certs = self.root / "certs"
        self.certs.mkdir(parents=True)
        flags = {"root": str(self.root), "prefix": prefix, "node": "node1", "consul.addr": [consul.addr],
                 "log.format": "json", "allow_plaintext_secrets": True, **settings}
        self.cfg = config.load(flags, env={})
        self.store = Store(self.cfg.consul)
        self.enroller = Enroller(self.cfg, self.store)

    # -- the tree ----------------------------------------------------------------------

    def pending(self, cn: str = CN) -> bytes:
        """What node setup without a ticket leaves: certs/<cn>.key and a self-signed certs/<cn>.crt."""
        key, cert = pending_request(cn)
        self.write(f"{cn}.key", key)
        self.write(f"{cn}.crt", cert)
        return cert

    def signed(self, ca, cn: str = CN) -> bytes:
        key, cert, _ = sign(ca, cn)
        self.write(f"{cn}.key", key)
        self.write(f"{cn}.crt", cert)
        return cert

    def write(self, name: str, data: bytes) -> None:
        tmp = self.certs / f".{name}.new"
        tmp.write_bytes(data)
        os.rename(tmp, self.certs / name)

    @property
    def ca_file(self) -> Path:
        return self.certs / "ca.crt"

    # -- Consul ------------------------------------------------------------------------

    def publish(self, blob: bytes) -> None:
        self.store.put(self.cfg.layout.ca, blob)

    def publish_ca(self, ca) -> None:
        self.publish(published_doc(ca.pem))

    def registration_pair(self, cn: str = CN):
        return self.store.get(self.cfg.layout.satellite(cn), consistent=True)

    def written(self) -> list[str]:
        """Every key under the prefix but the published CA."""
        return sorted(p.key for p in self.store.get_prefix(f"{self.cfg.prefix}/") if p.key != self.cfg.layout.ca)

    def step(self):
        return self.enroller.step()


def published_doc(pem: bytes) -> bytes:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return cadoc.encode(cadoc.from_pem(pem, now, "master1", "20260101T000000.000000Z-abcdef"))


def der_sha256(pem: bytes) -> str:
    return hashlib.sha256(fingerprint.load_cert(pem).public_bytes(Encoding.DER)).hexdigest()


@pytest.fixture(scope="module")
def ca():
    return make_ca("Icinga CA")


@pytest.fixture(scope="module")
def other_ca():
    return make_ca("Icinga CA")  # the same name, another key: a CA from another installation


@pytest.fixture
def sat(consul, prefix, tmp_path):
    return Sat(consul, prefix, tmp_path)


def test_without_a_certificate_the_satellite_has_no_request_and_writes_nothing(sat, ca):
    sat.publish_ca(ca)
    out = sat.step()
    assert out.state == NO_REQUEST and out.cn == "node1" and out.registration is None
    assert "does not exist yet" in out.detail
    assert sat.written() == [] and not sat.ca_file.exists()


def test_a_pending_request_without_a_published_ca_waits_and_writes_nothing(sat):
    sat.pending()
    out = sat.step()
    assert out.state == WAITING_CA and out.cn == CN
    assert sat.written() == [] and not sat.ca_file.exists()


def test_a_pending_request_under_a_published_ca_trusts_the_ca_and_registers_the_request(sat, ca):
    # as root, ca.crt goes to the owner of certs/ (Icinga 2's user), never to root
    owner = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    os.chown(sat.certs, *owner)
    cert = sat.pending()
    sat.publish_ca(ca)

    out = sat.step()

    assert out.state == REGISTERED and out.cn == CN
    assert sat.ca_file.read_bytes() == ca.pem
    st = sat.ca_file.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (*owner, 0o644)
    assert sorted(os.listdir(sat.certs)) == ["ca.crt", f"{CN}.crt", f"{CN}.key"]  # no temporary file left
    assert sat.written() == [sat.cfg.layout.satellite(CN)]
    reg = registration.decode(sat.registration_pair().value)
    assert reg == out.registration
    assert (reg.cn, reg.zone, reg.parent_zone, reg.host, reg.port, reg.node) == (CN, CN, "master", "", 0, "node1")
    assert reg.key_sha256 == fingerprint.spki_sha256(cert)
    assert reg.request_sha256 == der_sha256(cert) == fingerprint.cert_sha256(cert)
    assert reg.ca_spki_sha256 == fingerprint.spki_sha256(ca.pem)
    datetime.fromisoformat(reg.time)


def test_the_registration_names_the_configured_zone_parent_zone_and_endpoint(consul, prefix, tmp_path, ca):
    sat = Sat(consul, prefix, tmp_path, **{"enrol.zone": "dmz", "enrol.parent_zone": "berlin",
                                           "enrol.host": "sat1.example.com", "enrol.port": 5665})
    sat.pending()
    sat.publish_ca(ca)
    assert sat.step().state == REGISTERED
    reg = registration.decode(sat.registration_pair().value)
    assert (reg.cn, reg.zone, reg.parent_zone, reg.host, reg.port) == (CN, "dmz", "berlin", "sat1.example.com", 5665)


def test_a_pending_request_replaces_a_stale_ca_file_with_the_published_ca(sat, ca, other_ca):
    sat.write("ca.crt", other_ca.pem)  # left from an earlier enrolment under another CA
    sat.pending()
    sat.publish_ca(ca)
    assert sat.step().state == REGISTERED
    assert sat.ca_file.read_bytes() == ca.pem


def test_a_corrupt_registration_under_the_satellites_key_is_overwritten(sat, ca):
    cert = sat.pending()
    sat.publish_ca(ca)
    sat.store.put(sat.cfg.layout.satellite(CN), b"\xff not a registration")
    assert sat.step().state == REGISTERED
    assert registration.decode(sat.registration_pair().value).key_sha256 == fingerprint.spki_sha256(cert)


def test_a_second_step_with_nothing_changed_leaves_the_registration_and_the_ca_file_alone(sat, ca):
    sat.pending()
    sat.publish_ca(ca)
    assert sat.step().state == REGISTERED
    before, ca_inode = sat.registration_pair(), sat.ca_file.stat().st_ino
    again = Enroller(sat.cfg, sat.store, clock=lambda: time.time() + 120)  # another time, same request
    assert again.step().state == REGISTERED
    assert sat.step().state == REGISTERED
    after = sat.registration_pair()
    assert after.modify_index == before.modify_index and after.value == before.value
    assert sat.ca_file.stat().st_ino == ca_inode


class _RacedStore(Store):
    """The real store, with another writer let in between this writer's read of the
    registration and its check-and-set (the interleaving a loaded task meets by chance)."""

    def __init__(self, cfg, key: str, other):
        super().__init__(cfg)
        self.key, self.other, self.raced = key, other, False

    def get(self, key, consistent=False):
        pair = super().get(key, consistent=consistent)
        if key == self.key and not self.raced:
            self.raced = True
            self.other()
        return pair


def test_two_writers_of_one_request_both_end_registered_when_one_loses_the_check_and_set(sat, ca):
    # The sidecar's thread and `statesync enrol --wait` register the same request in one task.
    sat.pending()
    sat.publish_ca(ca)
    key = sat.cfg.layout.satellite(CN)
    first = Enroller(sat.cfg, Store(sat.cfg.consul))
    raced = Enroller(sat.cfg, _RacedStore(sat.cfg.consul, key, lambda: first.step()),
                     clock=lambda: time.time() + 60)

    assert raced.step().state == REGISTERED
    assert first.last.state == REGISTERED
    reg = registration.decode(sat.registration_pair().value)
    assert reg.key_sha256 == fingerprint.spki_sha256((sat.certs / f"{CN}.crt").read_bytes())


def test_a_registration_whose_write_landed_before_a_retry_is_not_an_error(sat, ca):
    # A PUT retried after a lost answer finds the key its first attempt wrote: its check-and-set
    # against "absent" loses to itself.
    class Retried(Store):
        def put(self, key, value, cas=None, fence=()):
            super().put(key, value, cas=cas, fence=fence)
            super().put(key, value, cas=cas, fence=fence)

    sat.pending()
    sat.publish_ca(ca)
    assert Enroller(sat.cfg, Retried(sat.cfg.consul)).step().state == REGISTERED
    assert sat.registration_pair() is not None


def test_a_lost_check_and_set_against_another_request_is_retried_with_this_nodes_request(sat, ca):
    sat.pending()
    sat.publish_ca(ca)
    key = sat.cfg.layout.satellite(CN)
    older = registration.Registration(
        version=1, cn=CN, zone=CN, parent_zone="master", host="", port=5665, key_sha256="0" * 64,
        request_sha256="0" * 64, ca_spki_sha256=fingerprint.spki_sha256(ca.pem), node="node1",
        time="2026-01-01T00:00:00+00:00")
    store = _RacedStore(sat.cfg.consul, key, lambda: sat.store.put(key, registration.encode(older)))

    assert Enroller(sat.cfg, store).step().state == REGISTERED
    reg = registration.decode(sat.registration_pair().value)
    assert reg.key_sha256 == fingerprint.spki_sha256((sat.certs / f"{CN}.crt").read_bytes()) != older.key_sha256


def test_a_new_key_re_registers_with_the_new_hashes(sat, ca):
    first = sat.pending()
    sat.publish_ca(ca)
    assert sat.step().state == REGISTERED
    before = sat.registration_pair()

    second = sat.pending()
    out = sat.step()

    assert out.state == REGISTERED
    after = sat.registration_pair()
    assert after.modify_index > before.modify_index
    reg = registration.decode(after.value)
    assert reg.key_sha256 == fingerprint.spki_sha256(second) != fingerprint.spki_sha256(first)
    assert reg.request_sha256 == der_sha256(second) != der_sha256(first)
    assert reg.ca_spki_sha256 == fingerprint.spki_sha256(ca.pem)


def test_a_certificate_of_the_published_ca_is_enrolled_and_its_registration_is_never_recreated(sat, ca):
    sat.pending()
    sat.publish_ca(ca)
    assert sat.step().state == REGISTERED
    registered = sat.registration_pair()

    sat.signed(ca)
    out = sat.step()
    assert out.state == ENROLLED and out.registration is None
    assert sat.registration_pair() == registered  # left as it is

    # deleting a registration un-accepts the satellite: an enrolled one must not put it back
    sat.store.delete(sat.cfg.layout.satellite(CN))
    assert sat.step().state == ENROLLED
    assert Enroller(sat.cfg, sat.store).step().state == ENROLLED
    assert sat.registration_pair() is None and sat.written() == []


def test_an_enrolled_node_that_never_registered_writes_nothing(sat, ca):
    sat.signed(ca)
    sat.write("ca.crt", ca.pem)
    sat.publish_ca(ca)
    assert sat.step().state == ENROLLED
    assert sat.written() == []


def test_a_certificate_of_another_ca_is_left_to_the_guard_and_its_ca_file_untouched(sat, ca, other_ca):
    sat.signed(other_ca)
    sat.write("ca.crt", other_ca.pem)
    before = sat.ca_file.stat()
    sat.publish_ca(ca)

    out = sat.step()

    assert out.state == OTHER_CA and "another CA" in out.detail
    after = sat.ca_file.stat()
    assert sat.ca_file.read_bytes() == other_ca.pem
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sat.written() == []


def test_a_certificate_of_another_ca_with_no_ca_file_gets_none(sat, ca, other_ca):
    sat.signed(other_ca)
    sat.publish_ca(ca)
    assert sat.step().state == OTHER_CA
    assert not sat.ca_file.exists() and sat.written() == []


def test_a_certificate_of_some_ca_with_nothing_published_is_not_enrolled_and_writes_nothing(sat, other_ca):
    sat.signed(other_ca)
    assert sat.step().state not in (ENROLLED, REGISTERED)
    assert not sat.ca_file.exists() and sat.written() == []


@pytest.mark.parametrize("blob", [
    pytest.param(b"not json", id="not-json"),
    pytest.param(b'{"v": 1, "pem": "-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n"}',
                 id="bad-pem"),
    pytest.param(b"", id="empty"),
])
def test_an_invalid_published_document_writes_no_ca_file_and_no_registration(sat, blob):
    sat.pending()
    sat.publish(blob)
    out = sat.step()
    assert out.state == WAITING_CA
    assert not sat.ca_file.exists() and sat.written() == []


def test_a_published_document_with_fingerprints_of_another_ca_writes_nothing(sat, ca, other_ca):
    doc = json.loads(published_doc(ca.pem))
    doc["pem"] = other_ca.pem.decode()  # PEM of one CA under the fingerprints of another
    sat.pending()
    sat.publish(json.dumps(doc).encode())
    assert sat.step().state == WAITING_CA
    assert not sat.ca_file.exists() and sat.written() == []


def test_a_published_certificate_that_is_no_ca_writes_no_ca_file_and_no_registration(sat, ca):
    _, leaf, _ = sign(ca, "master1")
    sat.pending()
    sat.publish(published_doc(leaf))
    out = sat.step()
    assert out.state == WAITING_CA
    assert not sat.ca_file.exists() and sat.written() == []


def test_an_expired_published_ca_writes_no_ca_file_and_no_registration(sat):
    old = make_ca("Old CA", start=NOW - dt.timedelta(days=800), days=365)
    sat.pending()
    sat.publish(published_doc(old.pem))
    assert sat.step().state == WAITING_CA
    assert not sat.ca_file.exists() and sat.written() == []


def test_the_ca_guard_sees_a_pending_request_as_cannot_tell_never_mismatch(ca, other_ca):
    _, cert = pending_request(CN)
    blob = published_doc(ca.pem)
    for local in (None, ca.pem, other_ca.pem, b"garbage"):
        decision = decide(local, blob, cert, f"certs/{CN}.crt", now=datetime.now(UTC).timestamp())
        assert decision.verdict is Verdict.UNKNOWN, (local, decision)
        assert decision.verdict.value == "cannot-tell"
    # the same tree with a certificate of another CA is a mismatch: the pending one is special
    _, foreign, _ = sign(other_ca, CN)
    assert decide(other_ca.pem, blob, foreign, f"certs/{CN}.crt").verdict is Verdict.MISMATCH
