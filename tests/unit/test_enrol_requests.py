"""The pending request files on the master: read without trusting them, answered without losing
anything Icinga 2 wrote (enrol/requests.py), and, at the end, against a real Icinga 2."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from statesync.enrol.requests import MAX_BYTES, scan, write_response
from statesync.errors import CorruptData
from statesync.pki import fingerprint
from statesync.pki.signing import sign

from ..certs import make_ca

NOW = dt.datetime.now(dt.UTC)


def self_signed(cn: str = "sat1") -> bytes:
    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW)
            .not_valid_after(NOW + dt.timedelta(days=397)).sign(k, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def put(directory: Path, pem: bytes, name: str | None = None, **fields) -> Path:
    """A request file as Icinga 2 writes it: compact JSON, named by the request's fingerprint."""
    directory.mkdir(parents=True, exist_ok=True)
    name = name or fingerprint.cert_sha256(pem)
    path = directory / f"{name}.json"
    path.write_text(json.dumps({"cert_request": pem.decode(), "ticket": "", **fields}, separators=(",", ":")))
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="module")
def ca():
    return make_ca("Icinga CA", kind="ec")


def ca_key(ca) -> bytes:
    return ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())


def test_a_request_file_is_found_with_its_cn_key_and_fingerprint(tmp_path):
    pem = self_signed("sat1")
    path = put(tmp_path, pem)
    [found] = scan(tmp_path)
    assert (found.path, found.error, found.response_pem) == (path, "", None)
    assert found.fingerprint == path.stem == found.request.fingerprint
    assert (found.request.cn, found.request.spki_sha256) == ("sat1", fingerprint.spki_sha256(pem))
    assert found.doc == {"cert_request": pem.decode(), "ticket": ""}
    assert found.mtime == path.stat().st_mtime


def test_a_missing_directory_has_no_requests(tmp_path):
    assert scan(tmp_path / "certificate-requests") == []


def test_requests_come_back_sorted_by_file_name(tmp_path):
    paths = sorted(put(tmp_path, self_signed(f"sat{i}")) for i in range(4))
    assert [p.path for p in scan(tmp_path)] == paths


def test_names_that_are_not_a_lowercase_sha256_are_ignored(tmp_path):
    pem = self_signed()
    fp = fingerprint.cert_sha256(pem)
    for name in (fp.upper(), fp[:-1], f"{fp}.json.tmp-abc", f".{fp}", "notes"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"cert_request": pem.decode()}))
    (tmp_path / f"{fp}.txt").write_text("x")
    assert scan(tmp_path) == []


def test_a_symlinked_request_is_never_followed(tmp_path):
    pem = self_signed()
    elsewhere = put(tmp_path / "elsewhere", pem)
    before = elsewhere.read_bytes()
    link = tmp_path / "requests" / elsewhere.name
    link.parent.mkdir()
    link.symlink_to(elsewhere)
    (tmp_path / "requests" / ("0" * 64 + ".json")).mkdir()
    assert scan(tmp_path / "requests") == []
    assert write_response(link, elsewhere.stem, b"unused") is False
    assert elsewhere.read_bytes() == before and link.is_symlink()


def test_an_oversized_file_is_reported_and_never_parsed(tmp_path):
    path = put(tmp_path, self_signed(), padding="x" * MAX_BYTES)
    [found] = scan(tmp_path)
    assert (found.request, found.error, found.doc) == (None, "file is larger than 256 KiB", {})
    assert write_response(path, path.stem, b"unused") is False


def test_a_request_whose_file_name_is_not_its_fingerprint_is_never_signed(tmp_path, ca):
    pem = self_signed()
    path = put(tmp_path, pem, name=hashlib.sha256(b"another request").hexdigest())
    [found] = scan(tmp_path)
    assert (found.request, found.error) == (None, "file name is not the request's fingerprint")
    assert write_response(path, path.stem, self_signed()) is False
    assert "cert_response" not in json.loads(path.read_text())


@pytest.mark.parametrize("content, why", [
    (b"{not json", "file is not JSON"),
    (b"\xff\xfe", "file is not JSON"),
    (b"[1, 2]", "file is not a JSON object"),
    (b'{"ticket": ""}', "cert_request is missing or not a string"),
    (b'{"cert_request": 7}', "cert_request is missing or not a string"),
    (b'{"cert_request": "-----BEGIN CERTIFICATE REQUEST-----"}', "certificate signing request"),
    (b'{"cert_request": "junk"}', "0 PEM certificates"),
])
def test_a_bad_file_is_reported_with_its_reason_and_never_raises(tmp_path, content, why):
    (tmp_path / ("a" * 64 + ".json")).write_bytes(content)
    [found] = scan(tmp_path)
    assert found.request is None and why in found.error


@pytest.mark.parametrize("content, why", [
    (b"[" * 200_000 + b"]" * 200_000, "file is larger than"),
    (b'{"cert_request": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested more than 100 deep"),
    (b"[" * 100_000, "file is"),
    (b'"just a string"', "not a JSON object"),
], ids=["oversize", "deep", "deep-unclosed", "non-object"])
def test_a_malformed_file_is_refused_alone_and_the_others_come_back(tmp_path, content, why):
    # Old code: the deeply nested file raised RecursionError out of scan(), and the pass signed nothing.
    good = put(tmp_path, self_signed("sat1"))
    bad = tmp_path / ("0" * 64 + ".json")
    bad.write_bytes(content)
    found = {p.path: p for p in scan(tmp_path)}
    assert found[good].error == "" and found[good].request.cn == "sat1"
    assert found[bad].request is None and why in found[bad].error, found[bad].error


def test_a_file_that_cannot_be_read_is_reported_and_the_others_still_come_back(tmp_path, monkeypatch):
    good = put(tmp_path, self_signed("sat1"))
    bad = put(tmp_path, self_signed("sat2"))
    real_open = os.open

    def failing_open(path, *args, **kw):
        if Path(path) == bad:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", failing_open)
    found = {p.path: p for p in scan(tmp_path)}
    assert found[good].error == "" and found[bad].request is None
    assert found[bad].error == "cannot read the file: Permission denied"


def test_a_response_is_written_keeping_every_other_field_in_icingas_compact_form(tmp_path, ca):
    pem = self_signed()
    path = put(tmp_path, pem, requestor_ca="-----BEGIN CERTIFICATE-----x", extra={"nested": [1, "two"]})
    [found] = scan(tmp_path)
    response = sign(found.request, ca.pem, ca_key(ca))
    assert write_response(path, found.fingerprint, response) is True
    text = path.read_text()
    assert ": " not in text and ", " not in text and not text.endswith("\n")
    assert json.loads(text) == {"cert_request": pem.decode(), "ticket": "", "requestor_ca": "-----BEGIN CERTIFICATE-----x",
                                "extra": {"nested": [1, "two"]}, "cert_response": response.decode()}
    [again] = scan(tmp_path)
    assert again.response_pem == response and again.error == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_response_keeps_the_files_owner_and_mode(tmp_path, ca):
    assert os.geteuid() == 0, "this test chowns a file to nobody: run the suite as root"
    path = put(tmp_path, self_signed())
    os.chown(path, 65534, 65534)
    os.chmod(path, 0o640)
    [found] = scan(tmp_path)
    inode = path.stat().st_ino
    assert write_response(path, found.fingerprint, sign(found.request, ca.pem, ca_key(ca)))
    st = path.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o640)
    assert st.st_ino != inode, "the file is replaced by a rename, never rewritten in place"


def test_a_file_icinga_rewrote_between_scan_and_write_is_detected(tmp_path, ca):
    path = put(tmp_path, self_signed())
    [found] = scan(tmp_path)
    response = sign(found.request, ca.pem, ca_key(ca))
    path.write_text(json.dumps({"cert_request": self_signed().decode(), "ticket": ""}))
    before = path.read_bytes()
    assert write_response(path, found.fingerprint, response) is False
    assert path.read_bytes() == before
    path.unlink()
    assert write_response(path, found.fingerprint, response) is False
    assert not path.exists()


def test_a_response_icinga_overwrote_is_written_again(tmp_path, ca):
    pem = self_signed()
    path = put(tmp_path, pem)
    [found] = scan(tmp_path)
    response = sign(found.request, ca.pem, ca_key(ca))
    assert write_response(path, found.fingerprint, response)
    put(tmp_path, pem)
    assert scan(tmp_path)[0].response_pem is None
    assert write_response(path, found.fingerprint, response)
    assert scan(tmp_path)[0].response_pem == response


def test_writing_the_same_response_twice_leaves_the_file_alone(tmp_path, ca):
    path = put(tmp_path, self_signed())
    [found] = scan(tmp_path)
    response = sign(found.request, ca.pem, ca_key(ca))
    assert write_response(path, found.fingerprint, response)
    inode = path.stat().st_ino
    assert write_response(path, found.fingerprint, response)
    assert path.stat().st_ino == inode


def test_a_response_for_another_key_is_never_written(tmp_path, ca):
    path = put(tmp_path, self_signed())
    [found] = scan(tmp_path)
    before = path.read_bytes()
    with pytest.raises(CorruptData, match="not a certificate for the request's key"):
        write_response(path, found.fingerprint, self_signed())
    assert path.read_bytes() == before

