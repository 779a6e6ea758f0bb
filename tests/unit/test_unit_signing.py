"""The master's sidecar signs a satellite's pending request as Icinga 2's CA would (pki/signing.py)."""
from __future__ import annotations

import datetime as dt
import hashlib
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtensionOID, NameOID, SignatureAlgorithmOID

from statesync.errors import CorruptData
from statesync.pki import fingerprint
from statesync.pki.signing import parse_request, sign

from ..certs import make_ca

NOW = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC)
_KEYS: dict[str, object] = {}


def key(kind: str = "rsa", slot: str = "a"):
    """Keys are slow to make (RSA above all); the tests share a few."""
    if (kind, slot) not in _KEYS:
        _KEYS[kind, slot] = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
                             else ec.generate_private_key(ec.SECP384R1()))
    return _KEYS[kind, slot]


def pem_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(k) -> bytes:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                           serialization.NoEncryption())


def request_cert(cn: str | list[str] | None = "sat1", subject_key=None, signing_key=None,
                 issuer: x509.Name | None = None) -> x509.Certificate:
    """A self-signed certificate as ``icinga2 node setup`` leaves it pending, or a variation of it."""
    subject_key = subject_key or key()
    cns = [] if cn is None else [cn] if isinstance(cn, str) else cn
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, c) for c in cns]
                     or [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Icinga")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
            .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=397))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(signing_key or subject_key, hashes.SHA256()))


@pytest.fixture(scope="module")
def rsa_ca():
    return make_ca("Icinga CA", kind="rsa")


@pytest.fixture(scope="module")
def ec_ca():
    return make_ca("Icinga CA", kind="ec")


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_a_self_signed_certificate_is_a_request_named_by_its_cn_its_key_and_its_fingerprint(kind):
    cert = request_cert("sat1", subject_key=key(kind))
    pem = pem_of(cert)
    req = parse_request(pem)
    assert req.cn == "sat1"
    assert req.fingerprint == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert (req.spki_sha256, req.fingerprint) == fingerprint.identity(pem)
    assert req.pem == pem


def test_the_signed_certificate_has_icingas_profile_in_every_field(rsa_ca):
    req = parse_request(pem_of(request_cert("sat1")))
    cert = x509.load_pem_x509_certificate(sign(req, rsa_ca.pem, key_pem(rsa_ca.key), now=NOW))
    assert cert.version == x509.Version.v3
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sat1")])
    assert cert.issuer == rsa_ca.cert.subject
    assert fingerprint.spki_sha256(pem_of(cert)) == req.spki_sha256
    assert 0 < cert.serial_number < 2 ** 160
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=397)
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.RSA_WITH_SHA256
    exts = {e.oid: e for e in cert.extensions}
    assert set(exts) == {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.SUBJECT_ALTERNATIVE_NAME}
    assert exts[ExtensionOID.BASIC_CONSTRAINTS].critical
    assert exts[ExtensionOID.BASIC_CONSTRAINTS].value == x509.BasicConstraints(ca=False, path_length=None)
    assert not exts[ExtensionOID.SUBJECT_ALTERNATIVE_NAME].critical
    assert list(exts[ExtensionOID.SUBJECT_ALTERNATIVE_NAME].value) == [x509.DNSName("sat1")]
    assert fingerprint.issued_by(pem_of(cert), rsa_ca.pem)


def test_every_signature_gets_a_serial_of_its_own(rsa_ca):
    req = parse_request(pem_of(request_cert("sat1")))
    serials = {x509.load_pem_x509_certificate(sign(req, rsa_ca.pem, key_pem(rsa_ca.key), now=NOW)).serial_number
               for _ in range(5)}
    assert len(serials) == 5
    assert max(serials) > 2 ** 120


def test_an_ec_ca_signs_with_ecdsa_and_sha256_and_an_ec_request_keeps_its_key(ec_ca):
    req = parse_request(pem_of(request_cert("sat-ec", subject_key=key("ec"))))
    pem = sign(req, ec_ca.pem, key_pem(ec_ca.key), now=NOW)
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert fingerprint.spki_sha256(pem) == req.spki_sha256
    assert fingerprint.issued_by(pem, ec_ca.pem)


def test_validity_starts_now_to_the_second_and_a_naive_time_is_utc(rsa_ca):
    req = parse_request(pem_of(request_cert()))
    naive = dt.datetime(2026, 3, 4, 5, 6, 7, 999999)
    cert = x509.load_pem_x509_certificate(sign(req, rsa_ca.pem, key_pem(rsa_ca.key), now=naive, days=10))
    assert cert.not_valid_before_utc == NOW
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=10)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cert = x509.load_pem_x509_certificate(sign(req, rsa_ca.pem, key_pem(rsa_ca.key)))
    assert before <= cert.not_valid_before_utc <= dt.datetime.now(dt.UTC)


def test_a_request_signed_by_another_key_is_refused():
    forged = request_cert("sat1", subject_key=key("rsa", "a"), signing_key=key("rsa", "b"))
    with pytest.raises(CorruptData, match="signature does not verify with its own key"):
        parse_request(pem_of(forged))


def test_a_csr_instead_of_a_self_signed_certificate_is_refused():
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sat1")])).sign(key(), hashes.SHA256()))
    with pytest.raises(CorruptData, match="certificate signing request"):
        parse_request(csr.public_bytes(serialization.Encoding.PEM))


def test_a_certificate_a_ca_issued_is_not_a_request(rsa_ca):
    issued = request_cert("sat1", signing_key=rsa_ca.key, issuer=rsa_ca.cert.subject)
    with pytest.raises(CorruptData, match="not self-signed"):
        parse_request(pem_of(issued))


@pytest.mark.parametrize("cns, why", [(["sat1", "sat2"], "2 CNs"), (None, "0 CNs"), (["  "], "CN is empty"),
                                      (["sat\n1"], "characters"), (["sät1"], "characters")])
def test_a_request_without_exactly_one_plain_cn_is_refused(cns, why):
    with pytest.raises(CorruptData, match=why):
        parse_request(pem_of(request_cert(cns)))


@pytest.mark.parametrize("data, why", [
    (b"", "0 PEM certificates"),
    (b"\x00\xff garbage", "0 PEM certificates"),
    (b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", "not a valid PEM certificate"),
])
def test_garbage_is_refused_with_a_reason(data, why):
    with pytest.raises(CorruptData, match=why):
        parse_request(data)


def test_two_certificates_in_one_request_are_refused():
    with pytest.raises(CorruptData, match="2 PEM certificates"):
        parse_request(pem_of(request_cert("sat1")) + pem_of(request_cert("sat2")))


def test_a_request_in_der_is_refused():
    with pytest.raises(CorruptData, match="0 PEM certificates"):
        parse_request(request_cert().public_bytes(serialization.Encoding.DER))


def test_a_weak_rsa_key_or_an_ed25519_key_is_refused():
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(CorruptData, match="1024 bits"):
        parse_request(pem_of(request_cert(subject_key=weak)))
    edkey = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sat1")])
    ed = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(edkey.public_key())
          .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1)).sign(edkey, None))
    with pytest.raises(CorruptData, match="unsupported hash|not RSA or EC"):
        parse_request(pem_of(ed))


def test_the_key_of_another_ca_is_refused(rsa_ca):
    other = make_ca("Icinga CA", kind="rsa")
    req = parse_request(pem_of(request_cert()))
    with pytest.raises(CorruptData, match="does not belong to the CA certificate"):
        sign(req, rsa_ca.pem, key_pem(other.key))


def test_a_renewed_ca_key_signs_from_the_next_signature_on_and_the_old_one_no_longer_does(rsa_ca):
    renewed = make_ca("Icinga CA", kind="rsa")
    req = parse_request(pem_of(request_cert()))
    for ca in (rsa_ca, renewed, rsa_ca):  # the parsed key is kept per content, never per CA name
        assert fingerprint.issued_by(sign(req, ca.pem, key_pem(ca.key)), ca.pem)
    with pytest.raises(CorruptData, match="does not belong to the CA certificate"):
        sign(req, renewed.pem, key_pem(rsa_ca.key))


def test_a_certificate_that_is_no_ca_does_not_sign(rsa_ca):
    leaf = request_cert("Icinga CA", subject_key=rsa_ca.key)
    req = parse_request(pem_of(request_cert()))
    with pytest.raises(CorruptData, match="not a CA certificate"):
        sign(req, pem_of(leaf), key_pem(rsa_ca.key))


def test_an_encrypted_or_unreadable_ca_key_is_refused(rsa_ca):
    req = parse_request(pem_of(request_cert()))
    encrypted = rsa_ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(CorruptData, match="encrypted"):
        sign(req, rsa_ca.pem, encrypted)
    with pytest.raises(CorruptData, match="not a PEM private key"):
        sign(req, rsa_ca.pem, b"garbage")


def test_a_request_named_like_the_ca_is_refused(rsa_ca):
    req = parse_request(pem_of(request_cert("Icinga CA")))
    with pytest.raises(CorruptData, match="CA's own name"):
        sign(req, rsa_ca.pem, key_pem(rsa_ca.key))


def test_openssl_verifies_the_signed_certificate_against_the_ca(tmp_path, rsa_ca, ec_ca):
    for name, ca, kind in (("rsa", rsa_ca, "rsa"), ("ec", ec_ca, "ec")):
        req = parse_request(pem_of(request_cert(f"sat-{name}", subject_key=key(kind))))
        (tmp_path / f"{name}-ca.crt").write_bytes(ca.pem)
        (tmp_path / f"{name}.crt").write_bytes(sign(req, ca.pem, key_pem(ca.key)))
        proc = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / f"{name}-ca.crt"),
                               str(tmp_path / f"{name}.crt")], check=False, capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stdout.strip().endswith(": OK"), proc.stdout + proc.stderr
