"""`statesync enrol` and `statesync satellites` as processes against the real Consul: exit codes,
one-line errors, the wait for the signed certificate, and a listing that hostile registrations
cannot garble."""
from __future__ import annotations

import json
import os
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from statesync import config
from statesync.consul.store import Store
from statesync.enrol import registration
from statesync.pki import cadoc, fingerprint, signing

from ..certs import make_ca, pending_request, sign
from ..support import clean_env, statesync_cmd, wait_for

pytestmark = pytest.mark.consul

CN = "sat1"


def published_doc(pem: bytes) -> bytes:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return cadoc.encode(cadoc.from_pem(pem, now, "master1", "20260101T000000.000000Z-abcdef"))


def key_pem(ca) -> bytes:
    return ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())


class Node:
    """One node's root and the commands run on it, under the test's own prefix."""

    def __init__(self, consul, prefix: str, base: Path, node: str = "node1"):
        self.addr, self.prefix, self.node = consul.addr, prefix, node
        self.root = base / node / "root"
        self.certs = self.root / "certs"
        self.certs.mkdir(parents=True)
        cfg = config.load({"prefix": prefix, "node": node, "consul.addr": [consul.addr]}, env={})
        self.layout, self.store = cfg.layout, Store(cfg.consul)

    def run(self, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
        e = clean_env()
        e.update(CONSUL_HTTP_ADDR=self.addr, STATESYNC_PREFIX=self.prefix, STATESYNC_ROOT=str(self.root),
                 STATESYNC_NODE=self.node, STATESYNC_ALLOW_PLAINTEXT_SECRETS="true", **env)
        return subprocess.run(statesync_cmd(*args), check=False, env=e, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def write(self, name: str, data: bytes) -> None:
        tmp = self.certs / f".{name}.new"
        tmp.write_bytes(data)
        os.rename(tmp, self.certs / name)

    def pending(self, cn: str = CN) -> bytes:
        key, cert = pending_request(cn)
        self.write(f"{cn}.key", key)
        self.write(f"{cn}.crt", cert)
        return cert

    def publish_ca(self, ca) -> None:
        self.store.put(self.layout.ca, published_doc(ca.pem))

    def registration(self, cn: str = CN):
        pair = self.store.get(self.layout.satellite(cn), consistent=True)
        return registration.decode(pair.value) if pair is not None else None


def _is_log_record(line: str) -> bool:
    try:
        return "event" in json.loads(line)
    except (ValueError, TypeError):
        return False


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The one human line of a failed command; the structured log records beside it (JSON, as
    log.format auto writes them when stderr is no terminal) do not count."""
    lines = [line for line in proc.stderr.strip().splitlines() if not _is_log_record(line)]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("statesync: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def ca():
    return make_ca("Icinga CA")


@pytest.fixture
def node(consul, prefix, tmp_path):
    return Node(consul, prefix, tmp_path)


# -- statesync enrol -----------------------------------------------------------------------

def test_enrol_registers_a_pending_request_and_exits_0(node, ca):
    cert = node.pending()
    node.publish_ca(ca)
    proc = node.run("enrol")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("registered: ") and node.layout.satellite(CN) in proc.stdout
    assert (node.certs / "ca.crt").read_bytes() == ca.pem
    reg = node.registration()
    assert reg.cn == CN and reg.key_sha256 == fingerprint.spki_sha256(cert)


def test_enrol_without_a_published_ca_is_one_line_and_exit_1(node):
    node.pending()
    proc = node.run("enrol")
    assert proc.returncode == 1
    assert "no valid CA is published" in one_error_line(proc)
    assert node.registration() is None and not (node.certs / "ca.crt").exists()


def test_enrol_without_a_certificate_is_one_line_and_exit_1(node, ca):
    node.publish_ca(ca)
    proc = node.run("enrol")
    assert proc.returncode == 1
    assert "does not exist yet" in one_error_line(proc)
    assert list(node.store.get_prefix(node.layout.satellites)) == []


def test_enrol_with_a_certificate_of_another_ca_is_one_line_and_exit_1(node, ca):
    other = make_ca("Icinga CA")
    key, cert, _ = sign(other, CN)
    node.write(f"{CN}.key", key)
    node.write(f"{CN}.crt", cert)
    node.write("ca.crt", other.pem)
    node.publish_ca(ca)
    proc = node.run("enrol")
    assert proc.returncode == 1
    assert "another CA" in one_error_line(proc)
    assert (node.certs / "ca.crt").read_bytes() == other.pem and node.registration() is None


def test_enrol_on_an_enrolled_node_exits_0_and_writes_nothing(node, ca):
    key, cert, _ = sign(ca, CN)
    node.write(f"{CN}.key", key)
    node.write(f"{CN}.crt", cert)
    node.publish_ca(ca)
    proc = node.run("enrol", "--wait", "60")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("enrolled: ") and node.registration() is None


def test_enrol_wait_gives_up_on_a_request_nobody_signs(node, ca):
    node.pending()
    node.publish_ca(ca)
    proc = node.run("enrol", "--wait", "3", timeout=30)
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "not enrolled within 3s" in line and "registered" in line
    assert node.registration() is not None  # registered while it waited


def test_enrol_wait_exits_0_once_icinga_puts_the_signed_certificate_in_place(node, ca):
    cert = node.pending()
    node.publish_ca(ca)
    failure: list[BaseException] = []

    def icinga_fetches_the_signed_certificate():
        try:
            wait_for(lambda: node.registration() is not None, 120, "the registration", step=0.1)
            signed = signing.sign(signing.parse_request(cert), ca.pem, key_pem(ca))
            node.write(f"{CN}.crt", signed)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failure.append(exc)

    worker = threading.Thread(target=icinga_fetches_the_signed_certificate, daemon=True)
    worker.start()
    proc = node.run("enrol", "--wait", "30", timeout=60)
    worker.join(25)
    assert not failure, failure
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("enrolled: ")
    assert fingerprint.issued_by((node.certs / f"{CN}.crt").read_bytes(), ca.pem)


def test_a_config_error_is_one_line_naming_the_setting_and_exit_2(node, ca):
    node.pending()
    node.publish_ca(ca)
    proc = node.run("enrol", STATESYNC_ENROL_PARENT_ZONE='a"b')
    assert proc.returncode == 2
    assert "enrol.parent_zone" in one_error_line(proc)
    assert node.registration() is None


# -- statesync satellites ------------------------------------------------------------------

def test_satellites_with_no_registration_says_so(node, ca):
    node.publish_ca(ca)
    proc = node.run("satellites")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("no satellite registered")
    proc = node.run("satellites", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == []


def _valid(ca, cert: bytes, cn: str = CN) -> bytes:
    return registration.encode(registration.Registration(
        cn=cn, zone=cn, parent_zone="master", key_sha256=fingerprint.spki_sha256(cert),
        request_sha256=fingerprint.cert_sha256(cert), ca_spki_sha256=fingerprint.spki_sha256(ca.pem),
        node="node1", time="2026-12-01T21:00:00+00:00"))


def _hostile(ca, cert: bytes, **fields) -> bytes:
    doc = json.loads(_valid(ca, cert))
    doc.update(fields)
    return json.dumps(doc).encode()


@pytest.fixture
def listing(consul, prefix, tmp_path, ca):
    """A master's root and three registrations: one valid, two hostile."""
    master = Node(consul, prefix, tmp_path, node="master1")
    master.publish_ca(ca)
    _, cert = pending_request(CN)
    sat = master.layout.satellites
    master.store.put(f"{sat}{CN}", _valid(ca, cert))
    master.store.put(f"{sat}liar", _hostile(ca, cert, cn="someone-else"))
    master.store.put(f"{sat}quoted", _hostile(ca, cert, cn="quoted", zone='z"; object Zone "x\x1b[2J\r\n'))
    # a newline and a C1 CSI in a field the table shows: a forged row, a terminal escape
    master.store.put(f"{sat}forger", _hostile(ca, cert, cn="forger", parent_zone="m\nx \x9b2J"))
    return master, cert


def _control(c: str) -> bool:
    return (ord(c) < 32 and c != "\n") or 0x7f <= ord(c) <= 0x9f


def test_satellites_lists_valid_and_hostile_registrations_safely(listing):
    master, cert = listing
    proc = master.run("satellites")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert not any(_control(c) for c in out), repr(out)
    lines = out.splitlines()
    assert len(lines) == 5, out  # the header and one line per registration
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {CN, "liar", "quoted", "forger"}, out
    assert rows[CN].split()[2] == "-" and rows[CN].split()[5] == "registered" and "unknown" in rows[CN]
    assert fingerprint.spki_sha256(cert)[:16] in rows[CN]
    assert "rejected" in rows["liar"] and "is not the key's name" in rows["liar"]
    assert "rejected" in rows["quoted"] and "zone" in rows["quoted"] and "is not a valid name" in rows["quoted"]
    assert "rejected" in rows["forger"] and "parent_zone" in rows["forger"]


def test_satellites_json_gives_one_object_per_registration(listing):
    master, cert = listing
    proc = master.run("satellites", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["cn"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == {CN, "liar", "quoted", "forger"}
    keys = {"cn", "zone", "parent_zone", "key_sha256", "state", "detail", "registered", "live_zone"}
    assert all(set(r) == keys for r in rows.values())
    assert rows[CN]["state"] == "registered" and "unknown" in rows[CN]["detail"]
    assert (rows[CN]["zone"], rows[CN]["parent_zone"]) == (CN, "master")
    assert rows[CN]["key_sha256"] == fingerprint.spki_sha256(cert)
    assert rows[CN]["registered"] == "2026-12-01T21:00:00+00:00"
    assert rows["liar"]["state"] == rows["quoted"]["state"] == rows["forger"]["state"] == "rejected"
    assert "is not the key's name" in rows["liar"]["detail"]
    assert "is not a valid name" in rows["quoted"]["detail"]


def test_satellites_shows_signed_once_the_request_file_holds_a_response(listing, ca):
    master, cert = listing
    (master.root / "ca").mkdir()
    (master.root / "ca/ca.crt").write_bytes(ca.pem)
    request = signing.parse_request(cert)
    response = signing.sign(request, ca.pem, key_pem(ca))
    requests = master.root / "certificate-requests"
    requests.mkdir()
    (requests / f"{request.fingerprint}.json").write_text(json.dumps(
        {"cert_request": cert.decode(), "cert_response": response.decode(), "ticket": ""}, separators=(",", ":")))
    rows = {r["cn"]: r for r in json.loads(master.run("satellites", "--json").stdout)}
    assert rows[CN]["state"] == "signed", rows[CN]
    assert rows["liar"]["state"] == "rejected"


def test_satellites_gives_a_spoofed_key_hash_the_acceptors_verdict(listing):
    # Old code: "registered", "valid; ..." while the master's log refused it.
    master, cert = listing
    request = signing.parse_request(cert)
    requests = master.root / "certificate-requests"
    requests.mkdir()
    (requests / f"{request.fingerprint}.json").write_text(json.dumps({"cert_request": cert.decode(), "ticket": ""}))
    doc = json.loads(master.store.get(f"{master.layout.satellites}{CN}").value)
    doc["key_sha256"] = "f" * 64
    master.store.put(f"{master.layout.satellites}{CN}", json.dumps(doc).encode())
    rows = {r["cn"]: r for r in json.loads(master.run("satellites", "--json").stdout)}
    assert rows[CN]["state"] == "rejected", rows[CN]
    assert rows[CN]["detail"].startswith("no pending request has the registered key and fingerprint")
