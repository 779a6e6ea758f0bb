"""Test certificates made with cryptography: a CA, its renewal with the same key pair,
node certificates it signs, and a satellite's certs/ directory as Icinga 2 lays it out."""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

NOW = dt.datetime.now(dt.timezone.utc)
# The files of a satellite's certs/ that a purge moves (for node name "sat1").
CERT_FILES = ("ca.crt", "sat1.crt", "sat1.key", "sat1.csr", "ticket", "trusted-parent.crt")


@dataclass(frozen=True)
class CA:
    key: object
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _key(kind: str):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(cn: str = "Icinga CA", kind: str = "ec", key=None, start: dt.datetime | None = None,
            days: int = 365) -> CA:
    """A self-signed CA; pass ``key`` to reuse a key pair (that is a renewal)."""
    key = key or _key(kind)
    start = start or NOW - dt.timedelta(days=1)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return CA(key, cert)


def renew(ca: CA, days_later: int = 30) -> CA:
    """The CA certificate renewed as Icinga 2 does it: same key and subject, new serial and dates."""
    cn = ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return make_ca(cn, key=ca.key, start=NOW + dt.timedelta(days=days_later), days=730)


def sign(ca: CA, cn: str, ip: str | None = None, dns: tuple[str, ...] = ()) -> tuple[bytes, bytes, bytes]:
    """A key, certificate and CSR for ``cn`` signed by ``ca`` (with an IP SAN and DNS SANs when given)."""
    key = _key("ec")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=365)))
    sans = [x509.IPAddress(ipaddress.ip_address(ip))] if ip else []
    sans += [x509.DNSName(name) for name in dns]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    return (_pem_key(key), cert.public_bytes(serialization.Encoding.PEM),
            csr.public_bytes(serialization.Encoding.PEM))


def enrol(root: Path, ca: CA, name: str = "sat1") -> dict[str, bytes]:
    """Lay out <root>/certs/ as an enrolled Icinga 2 node has it; return name -> bytes.

    ca.crt is written last and by rename, so a concurrent reader never sees a
    half-enrolled node with a CA of the new kind but a node certificate of the old.
    """
    certs = root / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    key, cert, csr = sign(ca, name)
    files = {f"{name}.key": key, f"{name}.crt": cert, f"{name}.csr": csr,
             "ticket": os.urandom(20).hex().encode(), "trusted-parent.crt": ca.pem, "ca.crt": ca.pem}
    for fname, data in files.items():
        tmp = certs / f".{fname}.tmp"
        tmp.write_bytes(data)
        os.chmod(tmp, 0o600 if fname.endswith(".key") else 0o644)
        os.rename(tmp, certs / fname)
    return files


def pending_request(cn: str = "sat1") -> tuple[bytes, bytes]:
    """The key and self-signed certificate ``icinga2 node setup`` without a ticket leaves in
    certs/ while the master has not signed the request yet (basicConstraints CA:FALSE, SAN DNS:cn)."""
    key = _key("rsa")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(minutes=5))
            .not_valid_after(NOW + dt.timedelta(days=397))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
            .sign(key, hashes.SHA256()))
    return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM)
