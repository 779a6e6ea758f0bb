"""`pki.chain.verify_issued_by` for every key type the CA may have and every way a leaf can
fail to be the CA's: all with real keys and certificates made by cryptography, no I/O."""
from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from statesync.pki.chain import verify_issued_by

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
KEYS = {
    "rsa": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ec": lambda: ec.generate_private_key(ec.SECP256R1()),
    "ec384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "ed448": ed448.Ed448PrivateKey.generate,
}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _hash(key):
    return None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()


def _cert(subject: str, issuer: str, public_key, signing_key, days=(-1, 365), **sign) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(NOW + dt.timedelta(days=days[0])).not_valid_after(NOW + dt.timedelta(days=days[1])))
    if subject == issuer:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(signing_key, _hash(signing_key), **sign)


def _ca(kind: str, cn: str = "Icinga CA"):
    key = KEYS[kind]()
    return key, _cert(cn, cn, key.public_key(), key)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _leaf(ca_key, issuer: str = "Icinga CA", kind: str = "ec", **kwargs) -> x509.Certificate:
    return _cert("master1", issuer, KEYS[kind]().public_key(), ca_key, **kwargs)


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_a_leaf_the_ca_signed_verifies_whatever_the_cas_key_type(kind):
    key, ca = _ca(kind)
    assert verify_issued_by(_pem(_leaf(key)), _pem(ca), NOW) == ""
    assert verify_issued_by(_pem(_leaf(key, kind="rsa")), _pem(ca), NOW.timestamp()) == ""


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_a_leaf_naming_the_ca_but_signed_by_another_key_of_the_same_type_is_refused(kind):
    _, ca = _ca(kind)
    impostor, _ = _ca(kind)
    why = verify_issued_by(_pem(_leaf(impostor)), _pem(ca), NOW)
    assert why == "certificate 'CN=master1': its signature does not verify with the CA's public key"


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed25519"])
def test_a_leaf_whose_signature_was_altered_is_refused(kind):
    key, ca = _ca(kind)
    der = bytearray(_leaf(key).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # the last byte of the signature BIT STRING
    altered = _pem(x509.load_der_x509_certificate(bytes(der)))
    assert verify_issued_by(altered, _pem(ca), NOW) == \
        "certificate 'CN=master1': its signature does not verify with the CA's public key"


@pytest.mark.parametrize("ca_kind,signer_kind", [("ec", "rsa"), ("rsa", "ec"), ("ed25519", "ec"), ("ec", "ed25519")])
def test_a_leaf_signed_with_a_key_of_another_type_is_refused(ca_kind, signer_kind):
    _, ca = _ca(ca_kind)
    impostor, _ = _ca(signer_kind)
    why = verify_issued_by(_pem(_leaf(impostor)), _pem(ca), NOW)
    assert why.startswith("certificate 'CN=master1': its ") and "signature" in why, why


def test_a_leaf_of_another_issuer_is_refused_naming_both_even_when_the_key_signed_it():
    key, ca = _ca("ec")
    why = verify_issued_by(_pem(_leaf(key, issuer="Other CA")), _pem(ca), NOW)
    assert why == "certificate 'CN=master1' was issued by 'CN=Other CA', not by 'CN=Icinga CA'"


def test_an_rsa_pss_signature_is_refused_because_icinga_never_makes_one():
    key, ca = _ca("rsa")
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    why = verify_issued_by(_pem(_leaf(key, rsa_padding=pss)), _pem(ca), NOW)
    assert why == "certificate 'CN=master1': its RSA signature is not PKCS#1 v1.5, which Icinga 2 never makes"


def test_the_validity_window_is_checked_after_the_signature():
    key, ca = _ca("ec")
    expired = _leaf(key, days=(-30, -20))
    assert verify_issued_by(_pem(expired), _pem(ca), NOW).startswith("certificate 'CN=master1' expired at ")
    future = _leaf(key, days=(3, 30))
    assert verify_issued_by(_pem(future), _pem(ca), NOW).startswith("certificate 'CN=master1' is not valid before ")
    impostor, _ = _ca("ec")
    assert "signature does not verify" in verify_issued_by(_pem(_leaf(impostor, days=(-30, -20))), _pem(ca), NOW)
