"""The published CA: the JSON document a master sidecar writes at ``<prefix>/ca``. Pure.

    {"v": 1,
     "pem": "-----BEGIN CERTIFICATE-----\\n...",     the CA certificate as committed
     "spki_sha256": "<hex>",    SHA-256 of its public key (SubjectPublicKeyInfo, DER): the CA's identity
     "cert_sha256": "<hex>",    SHA-256 of the certificate (DER): changes on a renewal with the same key
     "subject": "CN=Icinga CA", "not_after": "<ISO 8601>",
     "published": "<ISO 8601 UTC>", "node": "<master node>", "snapshot": "<snapshot id>"}

A reader trusts nothing in it: ``decode`` parses the PEM and recomputes both
fingerprints, so a document whose PEM does not parse or does not match its
published fingerprints is rejected as a whole (``CorruptData``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import CorruptData
from ..jsonload import loads
from ..snapshot.layout import valid_sha256
from . import fingerprint

DOC_VERSION = 1
# A CA certificate is a few KiB; a document far larger is not one of ours.
MAX_DOC_BYTES = 256 * 1024


@dataclass(frozen=True)
class PublishedCA:
    """A verified published CA."""

    pem: bytes
    spki_sha256: str
    cert_sha256: str
    subject: str = ""
    not_after: str = ""
    published: str = ""
    node: str = ""
    snapshot: str = ""

    def same_content(self, other: "PublishedCA | None") -> bool:
        """True when ``other`` publishes the very same certificate (time and snapshot aside)."""
        return other is not None and (self.spki_sha256, self.cert_sha256) == (other.spki_sha256, other.cert_sha256)


def from_pem(pem: bytes, published: str, node: str, snapshot: str) -> PublishedCA:
    """Build the document for the CA certificate ``pem``; raise CorruptData when it does not parse."""
    cert = fingerprint.load_cert(pem)
    spki, cert_sha = fingerprint.identity(pem)
    return PublishedCA(pem=bytes(pem), spki_sha256=spki, cert_sha256=cert_sha,
                       subject=cert.subject.rfc4514_string(), not_after=cert.not_valid_after_utc.isoformat(),
                       published=published, node=node, snapshot=snapshot)


def encode(doc: PublishedCA) -> bytes:
    """Return the JSON bytes stored at ``<prefix>/ca``."""
    return json.dumps({"v": DOC_VERSION, "pem": doc.pem.decode("ascii", "replace"),
                       "spki_sha256": doc.spki_sha256, "cert_sha256": doc.cert_sha256,
                       "subject": doc.subject, "not_after": doc.not_after, "published": doc.published,
                       "node": doc.node, "snapshot": doc.snapshot}, sort_keys=True).encode()


def decode(blob: bytes) -> PublishedCA:
    """Parse and verify a stored document.

    Raises CorruptData when it is not our JSON, when its PEM does not parse, or when
    the fingerprints recomputed from the PEM differ from the published ones.
    """
    if len(blob) > MAX_DOC_BYTES:
        raise CorruptData(f"published CA document is larger than {MAX_DOC_BYTES} bytes")
    try:
        d = loads(blob)
    except (ValueError, UnicodeDecodeError):
        raise CorruptData("published CA document is not JSON") from None
    if not isinstance(d, dict) or d.get("v") != DOC_VERSION:
        raise CorruptData("published CA document has an unknown version")
    pem, spki, cert_sha = d.get("pem"), d.get("spki_sha256"), d.get("cert_sha256")
    if not isinstance(pem, str) or not pem:
        raise CorruptData("published CA document has no PEM")
    for name, value in (("spki_sha256", spki), ("cert_sha256", cert_sha)):
        if not isinstance(value, str) or not valid_sha256(value):
            raise CorruptData(f"published CA document has no valid {name}")
    try:
        actual_spki, actual_cert = fingerprint.identity(pem.encode("ascii"))
    except (CorruptData, UnicodeEncodeError):
        raise CorruptData("published CA PEM does not parse as a certificate") from None
    if actual_spki != spki:
        raise CorruptData(f"published CA PEM has public key sha256 {actual_spki}, "
                          f"not the published {spki}")
    if actual_cert != cert_sha:
        raise CorruptData(f"published CA PEM has certificate sha256 {actual_cert}, "
                          f"not the published {cert_sha}")
    text = {k: d.get(k) if isinstance(d.get(k), str) else "" for k in ("subject", "not_after", "published",
                                                                         "node", "snapshot")}
    return PublishedCA(pem=pem.encode("ascii"), spki_sha256=spki, cert_sha256=cert_sha, **text)
