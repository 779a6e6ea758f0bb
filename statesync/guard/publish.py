"""The master's half of the CA guard: publish the CA of every committed snapshot at ``<prefix>/ca``.

Runs as an ``on_commit`` hook of the master's daemon. The document (``cadoc``) is
written only when its certificate differs from the one published, so satellites'
blocking queries wake up only for a real change; a renewal with the same key is
published too (satellites log it and keep their certificates).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import structlog

from ..errors import CorruptData
from ..pki import cadoc
from ..pki.cadoc import PublishedCA
from ..repo.repository import Repo
from ..snapshot import chunking
from ..snapshot.manifest import FILE, Entry, Manifest
from ..snapshot.record import Record

log = structlog.get_logger(__name__)

CA_CERT = "ca/ca.crt"


class CaPublisher:
    """Publishes ca/ca.crt of committed snapshots. Call it with ``(record, manifest)``.

    ``recheck``: seconds after which an unchanged CA is compared with Consul again,
    which repairs a published document deleted or overwritten behind our back.
    """

    def __init__(self, repo: Repo, root: Path, recheck: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, fence: Callable[[], tuple] = tuple):
        self.repo = repo
        # The writer lock's fence: a master that lost its lock publishes nothing either.
        self.fence = fence
        self.root = Path(root)
        self.recheck = recheck
        self.clock = clock
        self._done_sha = ""
        self._done_at = 0.0

    def __call__(self, record: Record, manifest: Manifest) -> None:
        """Publish the CA ``manifest`` holds, if any and if needed.

        Raises StoreError/ConsulUnavailable when Consul fails (the daemon retries the
        sync); a ca/ca.crt that is not a certificate is logged and skipped.
        """
        entry = next((e for e in manifest.entries if e.path == CA_CERT), None)
        if entry is None or entry.type != FILE:
            return
        now = self.clock()
        if entry.sha256 == self._done_sha and now - self._done_at < self.recheck:
            return
        pem = self._content(entry)
        published = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        try:
            doc = cadoc.from_pem(pem, published=published, node=self.repo.layout.node, snapshot=record.id)
        except CorruptData as exc:
            log.warning("ca/ca.crt is not a certificate; not published", snapshot=record.id, error=str(exc))
        else:
            self.publish(doc)
        self._done_sha, self._done_at = entry.sha256, now

    def publish(self, doc: PublishedCA) -> str:
        """Write ``doc`` unless the same certificate is already published.

        Returns "published" (first time), "unchanged", "renewed" (same key) or
        "replaced" (another key). Raises StoreError; CasConflict when another writer
        changed the key meanwhile (the next call compares again).
        """
        store, key = self.repo.store, self.repo.layout.ca
        pair = store.get(key)
        old = None
        if pair is not None:
            try:
                old = cadoc.decode(pair.value)
            except CorruptData as exc:
                log.warning("the published CA is invalid; replacing it", key=key, error=str(exc))
        fields = dict(key=key, snapshot=doc.snapshot, ca_spki_sha256=doc.spki_sha256, ca_cert_sha256=doc.cert_sha256)
        if doc.same_content(old):
            log.debug("published CA unchanged", **fields)
            return "unchanged"
        store.put(key, cadoc.encode(doc), cas=pair.modify_index if pair is not None else 0, fence=self.fence())
        if old is None:
            log.info("CA published", **fields)
            return "published"
        if old.spki_sha256 == doc.spki_sha256:
            # Icinga 2 renews its CA keeping the key pair; satellites must not purge on that.
            log.info("CA certificate renewed with the same key; published", previous_cert_sha256=old.cert_sha256,
                     **fields)
            return "renewed"
        log.warning("CA key changed; published the new CA, satellites will enrol again",
                    previous_spki_sha256=old.spki_sha256, **fields)
        return "replaced"

    def _content(self, entry: Entry) -> bytes:
        """The committed bytes of ca/ca.crt: from disk when it still has them, else from Consul."""
        try:
            data = (self.root / CA_CERT).read_bytes()
            if chunking.sha256(data) == entry.sha256:
                return data
        except OSError:
            pass
        if not entry.chunks:
            return b""
        pieces = self.repo.fetch_chunks(set(entry.chunks))
        return chunking.join(entry.sha256, [pieces[d] for d in entry.chunks])

