"""CA identity: fingerprints of certificates and their public keys. Pure.

A CA is identified by its public key, not by the bytes of its certificate: Icinga 2
(from 2.14) renews the CA certificate keeping the key pair, and a renewed
certificate is the same CA.
"""
from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import CorruptData


def load_cert(pem: bytes) -> x509.Certificate:
    """Parse the first PEM certificate in ``pem``; raise CorruptData when it does not parse."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError):
        raise CorruptData("certificate is not valid PEM") from None


def spki_sha256(pem: bytes) -> str:
    """SHA-256 (hex) of the certificate's SubjectPublicKeyInfo in DER; raise CorruptData."""
    der = load_cert(pem).public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def cert_sha256(pem: bytes) -> str:
    """SHA-256 (hex) of the certificate in DER; raise CorruptData."""
    return hashlib.sha256(load_cert(pem).public_bytes(serialization.Encoding.DER)).hexdigest()


def identity(pem: bytes) -> tuple[str, str]:
    """Return ``(spki_sha256, cert_sha256)`` of one PEM certificate, parsed once; raise CorruptData."""
    cert = load_cert(pem)
    der = cert.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return (hashlib.sha256(der).hexdigest(),
            hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest())


def issued_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    """Return True when ``cert_pem`` names ``ca_pem``'s subject as issuer and carries a
    signature that ``ca_pem``'s public key verifies; raise CorruptData if either does not parse.

    Validity dates are not checked: whether a certificate belongs to a CA does not
    change when it expires, and a renewed CA (same key, same subject) still verifies
    the certificates it signed before its renewal.
    """
    from cryptography.exceptions import InvalidSignature
    cert, ca = load_cert(cert_pem), load_cert(ca_pem)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def self_signed(cert_pem: bytes) -> bool:
    """Return True when ``cert_pem`` is its own issuer and its own key verifies its signature:
    what ``icinga2 node setup`` without a ticket leaves in certs/ while the request is pending.
    Raises CorruptData if it does not parse."""
    cert = load_cert(cert_pem)
    if cert.issuer != cert.subject:
        return False
    return issued_by(cert_pem, cert_pem)


def untrusted_ca(pem: bytes, now: float | None, clock_skew: float) -> str | None:
    """Why the certificate ``pem`` is no CA worth acting on at ``now`` (epoch seconds), or None.

    A CA must say so (basicConstraints CA:TRUE), verify its own signature (a certificate
    naming a CA's subject but signed by another key is not that CA) and be inside its
    validity period, give or take ``clock_skew`` seconds of disagreement between clocks
    (not checked when ``now`` is None). Raises CorruptData when it does not parse.
    """
    from cryptography.exceptions import InvalidSignature
    cert = load_cert(pem)
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return "it is not a CA certificate (no basicConstraints)"
    except ValueError:
        return "its extensions do not parse"
    if not constraints.ca:
        return "it is not a CA certificate (basicConstraints CA:FALSE)"
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return "its self-signature does not verify against its own key"
    if now is None:
        return None
    if cert.not_valid_before_utc.timestamp() > now + clock_skew:
        return f"it is not valid before {cert.not_valid_before_utc.isoformat()}"
    if cert.not_valid_after_utc.timestamp() < now - clock_skew:
        return f"it expired at {cert.not_valid_after_utc.isoformat()}"
    return None
