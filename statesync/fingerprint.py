"""CA identity: fingerprints of certificates and their public keys. Pure.

A CA is identified by its public key, not by the bytes of its certificate: Icinga 2
(from 2.14) renews the CA certificate keeping the key pair, and a renewed
certificate is the same CA.
"""
from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import CorruptData


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
