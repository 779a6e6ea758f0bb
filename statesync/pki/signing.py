"""Signing a satellite's pending certificate request the way Icinga 2's own CA does. Pure.

A satellite enrolled without a ticket leaves on the master a *self-signed certificate* (not
a CSR) as its request. Its self-signature is the proof that the requester holds the private
key; the master's sidecar signs a certificate for that public key with Icinga's profile, so
that a satellite cannot tell it from one ``icinga2 ca sign`` made: SHA-256, 397 days from
now, basicConstraints critical CA:FALSE, SAN DNS:<cn>, a random serial, and no key
identifiers (Icinga 2.13 adds none).
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from ..errors import CorruptData
from .fingerprint import untrusted_ca

VALIDITY_DAYS = 397
# Below this an RSA key is refused by OpenSSL's default security level on Debian, so a
# certificate for it could never make a TLS connection to the master.
MIN_RSA_BITS = 2048
_WEAK_HASHES = (hashes.MD5, hashes.SHA1)
_PEM_CERT = b"-----BEGIN CERTIFICATE-----"
_PEM_CSR = b"-----BEGIN CERTIFICATE REQUEST-----"


@dataclass(frozen=True)
class RequestCert:
    """A pending request that passed every check of ``parse_request``.

    ``fingerprint`` (SHA-256 of the DER) names the request file Icinga keeps; ``cn`` with
    ``spki_sha256`` is the identity a satellite registers, stable across Icinga's rewrites.
    """
    cn: str
    spki_sha256: str
    fingerprint: str
    pem: bytes
    spki_der: bytes


def parse_request(pem: bytes) -> RequestCert:
    """Check ``pem`` as a pending request: one PEM certificate, self-issued, its signature
    verifying with its own public key (RSA PKCS#1 v1.5 or ECDSA), exactly one non-empty CN.
    Raise CorruptData naming the first check that failed."""
    if not isinstance(pem, bytes):
        raise CorruptData("request is not bytes")
    cert = _one_certificate(pem)
    if cert.subject != cert.issuer:
        raise CorruptData("request is not self-signed (its issuer is not its subject)")
    _check_own_signature(cert)
    cn = _only_cn(cert.subject, "request")
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    der = cert.public_bytes(serialization.Encoding.DER)
    return RequestCert(cn=cn, spki_sha256=hashlib.sha256(spki).hexdigest(),
                       fingerprint=hashlib.sha256(der).hexdigest(),
                       pem=cert.public_bytes(serialization.Encoding.PEM), spki_der=spki)


def sign(request: RequestCert, ca_cert_pem: bytes, ca_key_pem: bytes, now: dt.datetime | None = None,
         days: int = VALIDITY_DAYS) -> bytes:
    """The PEM of a certificate for ``request``'s CN and public key, issued by the CA with
    Icinga's profile. Raise CorruptData when the CA certificate is no CA, the key is not an
    unencrypted PEM private key of that CA, or ``days`` is not positive."""
    if days <= 0:
        raise CorruptData(f"validity of {days} days is not positive")
    why = untrusted_ca(ca_cert_pem, None, 0)
    if why:
        raise CorruptData(f"CA certificate refused: {why}")
    ca = x509.load_pem_x509_certificate(ca_cert_pem)
    key = _ca_key(ca_key_pem, ca)
    try:
        public_key = serialization.load_der_public_key(request.spki_der)
    except (ValueError, UnsupportedAlgorithm):
        raise CorruptData("request's public key does not parse") from None
    start = _utc(now).replace(microsecond=0)
    try:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, request.cn)])
        if name == ca.subject:
            raise CorruptData(f"request's CN {request.cn!r} is the CA's own name")
        cert = _build(request.cn, name, ca.subject, public_key, start, days, key)
    except ValueError as exc:
        raise CorruptData(f"cannot sign the request of {request.cn!r}: {exc}") from None
    return cert.public_bytes(serialization.Encoding.PEM)


def _build(cn: str, name: x509.Name, issuer: x509.Name, public_key, start: dt.datetime, days: int,
           key) -> x509.Certificate:
    return (x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .sign(key, hashes.SHA256()))


def _one_certificate(pem: bytes) -> x509.Certificate:
    if _PEM_CSR in pem:
        raise CorruptData("request is a certificate signing request, not a self-signed certificate")
    if pem.count(_PEM_CERT) != 1:
        raise CorruptData(f"request holds {pem.count(_PEM_CERT)} PEM certificates, not one")
    try:
        return x509.load_pem_x509_certificate(pem)
    except (ValueError, TypeError):
        raise CorruptData("request is not a valid PEM certificate") from None


def _check_own_signature(cert: x509.Certificate) -> None:
    key = cert.public_key()
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or isinstance(algorithm, _WEAK_HASHES):
        raise CorruptData(f"request is signed with an unsupported hash ({cert.signature_algorithm_oid.dotted_string})")
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CorruptData(f"request's RSA key has {key.key_size} bits, fewer than {MIN_RSA_BITS}")
        if cert.signature_algorithm_parameters is not None and not isinstance(
                cert.signature_algorithm_parameters, padding.PKCS1v15):
            raise CorruptData("request's RSA signature is not PKCS#1 v1.5")
        verify = lambda: key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algorithm)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        verify = lambda: key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
    else:
        raise CorruptData(f"request's key type {type(key).__name__} is not RSA or EC")
    try:
        verify()
    except (InvalidSignature, ValueError, TypeError):
        raise CorruptData("request's signature does not verify with its own key") from None


def _only_cn(name: x509.Name, what: str) -> str:
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise CorruptData(f"{what} has {len(cns)} CNs, not exactly one")
    cn = cns[0].value
    if not isinstance(cn, str) or not cn.strip():
        raise CorruptData(f"{what}'s CN is empty")
    # The CN becomes a DNS SAN and an Icinga endpoint name: text a log line or a config
    # file could be fooled by is refused rather than escaped.
    if not cn.isascii() or not cn.isprintable() or cn != cn.strip():
        raise CorruptData(f"{what}'s CN {cn!r} holds characters an endpoint name may not have")
    return cn


@functools.lru_cache(maxsize=2)
def _private_key(pem: bytes):
    """The key parsed from ``pem``, kept for its exact bytes: parsing checks an RSA key, about
    0.3 s for Icinga's 4096-bit CA, which made signing 200 requests take a minute. The caller
    still reads the file for every signature, so a renewed CA key is parsed anew."""
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise CorruptData("CA key is encrypted; an unencrypted PEM private key is needed") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CorruptData("CA key is not a PEM private key") from None


def _ca_key(pem: bytes, ca: x509.Certificate):
    key = _private_key(bytes(pem))
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise CorruptData(f"CA key type {type(key).__name__} is not RSA or EC")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, spki)
            != ca.public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise CorruptData("CA key does not belong to the CA certificate")
    return key


def _utc(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        return now.replace(tzinfo=dt.UTC)
    return now.astimezone(dt.UTC)
