"""Whether a leaf certificate was issued by a given CA. Pure: bytes and a time in, one line out.

The guard pins the parent's certificate for the next enrolment only when this says the
parent presents a certificate of the *published* CA: a pin of anything else would make
``icinga2 node setup`` trust a parent that cannot enrol the node.

cryptography checks the signature for every key type (``verify_directly_issued_by``); what
is left here is the project's policy on top of it: the issuer named in the one line, RSA
signatures only as Icinga 2 makes them, and the validity window.
"""
from __future__ import annotations

from datetime import datetime, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def verify_issued_by(leaf_pem: bytes, ca_pem: bytes, now: float | datetime) -> str:
    """"" when ``leaf_pem`` is signed by ``ca_pem``'s key, names it as issuer and is valid
    at ``now`` (epoch seconds or an aware datetime); otherwise one line saying why not."""
    try:
        leaf = x509.load_pem_x509_certificate(leaf_pem)
    except ValueError:
        return "the parent's certificate does not parse as PEM"
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError:
        return "the CA certificate does not parse as PEM"
    subject = leaf.subject.rfc4514_string()
    if leaf.issuer != ca.subject:
        return (f"certificate {subject!r} was issued by {leaf.issuer.rfc4514_string()!r}, "
                f"not by {ca.subject.rfc4514_string()!r}")
    why = _signature_error(leaf, ca)
    if why:
        return f"certificate {subject!r}: {why}"
    when = now if isinstance(now, datetime) else datetime.fromtimestamp(now, timezone.utc)
    if when < leaf.not_valid_before_utc:
        return f"certificate {subject!r} is not valid before {leaf.not_valid_before_utc.isoformat()}"
    if when > leaf.not_valid_after_utc:
        return f"certificate {subject!r} expired at {leaf.not_valid_after_utc.isoformat()}"
    return ""


def _signature_error(leaf: x509.Certificate, ca: x509.Certificate) -> str:
    try:
        if isinstance(ca.public_key(), rsa.RSAPublicKey) and \
                not isinstance(leaf.signature_algorithm_parameters, padding.PKCS1v15):
            # cryptography would accept RSA-PSS; a parent presenting it was not signed by Icinga 2.
            return "its RSA signature is not PKCS#1 v1.5, which Icinga 2 never makes"
        leaf.verify_directly_issued_by(ca)
    except InvalidSignature:
        return "its signature does not verify with the CA's public key"
    except (TypeError, ValueError, UnsupportedAlgorithm) as exc:
        # e.g. an RSA leaf checked against an EC CA: the algorithms do not even fit
        return f"its signature cannot be checked with the CA's key ({type(exc).__name__})"
    return ""
