"""Unit tests for CA identity (statesync.fingerprint) and the published CA document (statesync.cadoc)."""
from __future__ import annotations

import hashlib
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from statesync.errors import CorruptData
from statesync.pki import cadoc, fingerprint

from ..certs import make_ca, renew, sign


@pytest.fixture(scope="module")
def ca():
    return make_ca()


def test_the_public_key_fingerprint_is_the_sha256_of_the_der_subject_public_key_info(ca):
    der = ca.key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    assert fingerprint.spki_sha256(ca.pem) == hashlib.sha256(der).hexdigest()
    assert fingerprint.cert_sha256(ca.pem) == hashlib.sha256(ca.cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert fingerprint.identity(ca.pem) == (fingerprint.spki_sha256(ca.pem), fingerprint.cert_sha256(ca.pem))


def test_a_renewed_ca_certificate_keeps_its_key_fingerprint_but_changes_its_certificate_fingerprint(ca):
    renewed = renew(ca)
    assert renewed.cert.serial_number != ca.cert.serial_number
    assert renewed.cert.not_valid_after_utc != ca.cert.not_valid_after_utc
    assert fingerprint.spki_sha256(renewed.pem) == fingerprint.spki_sha256(ca.pem)
    assert fingerprint.cert_sha256(renewed.pem) != fingerprint.cert_sha256(ca.pem)


def test_a_new_ca_has_another_key_fingerprint(ca):
    assert fingerprint.spki_sha256(make_ca().pem) != fingerprint.spki_sha256(ca.pem)


def test_rsa_cas_are_fingerprinted_and_verified_like_ec_ones():
    rsa_ca = make_ca(kind="rsa")
    _, cert, _ = sign(rsa_ca, "sat1")
    assert len(fingerprint.spki_sha256(rsa_ca.pem)) == 64
    assert fingerprint.issued_by(cert, rsa_ca.pem)


def test_a_node_certificate_verifies_against_its_ca_and_its_renewal_but_not_against_another_ca(ca):
    _, cert, _ = sign(ca, "sat1")
    assert fingerprint.issued_by(cert, ca.pem)
    assert fingerprint.issued_by(cert, renew(ca).pem)
    assert not fingerprint.issued_by(cert, make_ca().pem)


def test_a_ca_with_the_same_name_but_another_key_does_not_verify_the_node_certificate(ca):
    _, cert, _ = sign(ca, "sat1")
    impostor = make_ca("Icinga CA")
    assert not fingerprint.issued_by(cert, impostor.pem)


@pytest.mark.parametrize("junk", [b"", b"not a certificate", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_garbage_is_reported_as_corrupt_data_not_as_a_crash(junk, ca):
    with pytest.raises(CorruptData):
        fingerprint.spki_sha256(junk)
    with pytest.raises(CorruptData):
        fingerprint.issued_by(junk, ca.pem)


# --- the published document -----------------------------------------------------------

def _doc(ca, **over):
    d = json.loads(cadoc.encode(cadoc.from_pem(ca.pem, "2026-01-01T00:00:00Z", "master1", "snap")))
    d.update(over)
    return json.dumps(d).encode()


def test_a_published_document_round_trips_with_both_fingerprints_and_its_origin(ca):
    doc = cadoc.decode(_doc(ca))
    assert doc.spki_sha256 == fingerprint.spki_sha256(ca.pem)
    assert doc.cert_sha256 == fingerprint.cert_sha256(ca.pem)
    assert (doc.node, doc.snapshot, doc.published) == ("master1", "snap", "2026-01-01T00:00:00Z")
    assert doc.subject == "CN=Icinga CA"
    assert x509.load_pem_x509_certificate(doc.pem).subject == ca.cert.subject


def test_documents_of_a_ca_and_its_renewal_have_different_content(ca):
    a = cadoc.from_pem(ca.pem, "t1", "m", "s1")
    again = cadoc.from_pem(ca.pem, "t2", "m", "s2")
    renewed = cadoc.from_pem(renew(ca).pem, "t3", "m", "s3")
    assert a.same_content(again)
    assert not a.same_content(renewed)
    assert not a.same_content(None)


def test_a_document_whose_key_fingerprint_does_not_match_its_pem_is_rejected(ca):
    with pytest.raises(CorruptData, match="public key sha256"):
        cadoc.decode(_doc(ca, spki_sha256=fingerprint.spki_sha256(make_ca().pem)))


def test_a_document_whose_certificate_fingerprint_does_not_match_its_pem_is_rejected(ca):
    with pytest.raises(CorruptData, match="certificate sha256"):
        cadoc.decode(_doc(ca, cert_sha256="0" * 64))


@pytest.mark.parametrize("blob", [b"{", b"[]", b'{"v": 2}', b"\xff\xfe"])
def test_a_document_that_is_not_ours_is_rejected(blob):
    with pytest.raises(CorruptData):
        cadoc.decode(blob)


def test_a_document_whose_pem_does_not_parse_is_rejected(ca):
    with pytest.raises(CorruptData, match="does not parse"):
        cadoc.decode(_doc(ca, pem="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
    with pytest.raises(CorruptData, match="no PEM"):
        cadoc.decode(_doc(ca, pem=""))
    with pytest.raises(CorruptData, match="spki_sha256"):
        cadoc.decode(_doc(ca, spki_sha256="xyz"))
