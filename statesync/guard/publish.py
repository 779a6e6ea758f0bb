"""The master's half of the CA guard: publish the CA of every committed snapshot at ``<prefix>/ca``.

Runs as an ``on_commit`` hook of the master's daemon. The document (``cadoc``) is
written only when its certificate differs from the one published, so satellites'
blocking queries wake up only for a real change; a renewal with the same key is
published too (satellites log it and keep their certificates). A CA with another key
is published only on an operator's recorded decision (``statesync accept-ca``) or the
permanent ``on_conflict = keep-local``; the snapshot holding it is committed all the
same, since it is the node's own history, while the publication is the fleet's truth.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import structlog

from .. import metrics
from ..consul.backoff import Backoff
from ..consul.client import Op
from ..consul.watch import Watch, key_query
from ..disk import CA_CERT
from ..errors import CorruptData, PermissionDenied
from ..pki import ca_acceptance, cadoc
from ..pki.cadoc import PublishedCA
from ..repo.repository import Repo
from ..snapshot import chunking
from ..snapshot.manifest import FILE, Entry, Manifest
from ..snapshot.record import Record

log = structlog.get_logger(__name__)


class CaPublisher:
    """Publishes ca/ca.crt of committed snapshots. Call it with ``(record, manifest)``.

    ``recheck``: seconds after which an unchanged CA is compared with Consul again,
    which repairs a published document deleted behind our back.

    A CA with another key than the published one is published only when an operator's
    pending ``statesync accept-ca`` record names exactly that change (consumed in the
    publishing transaction), or when ``on_conflict`` is ``keep-local`` (logged at error level
    each time) and the published CA is not one another publisher put there since ours.
    Otherwise nothing is published: the publisher is *conflicted* (error log, the
    ``statesync_ca_conflict`` gauge at 1) and re-examines the situation on every later call,
    until the published CA is its own again or an operator accepts one.
    """

    def __init__(self, repo: Repo, root: Path, recheck: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, fence: Callable[[], tuple] = tuple,
                 on_conflict: str = "refuse", ca_entry: str = CA_CERT):
        self.repo = repo
        # Where the CA is in a snapshot (below root) and on disk (below the state directory):
        # the same file, but not the same path when root holds several named roots.
        self.ca_entry = ca_entry
        # The writer lock's fence: a master that lost its lock publishes nothing either.
        self.fence = fence
        self.root = Path(root)
        self.recheck = recheck
        self.clock = clock
        self.on_conflict = on_conflict
        self.conflicted = False
        # The key this process last published or found published as its own: a published key
        # other than this one was put there by someone else, and is never fought over.
        self._mine = ""
        self._alerted: tuple = ()
        self._done_sha = ""
        self._done_at = 0.0
        # The daemon's thread and the acceptance watcher both publish; one at a time.
        self._lock = threading.Lock()
        self._last: tuple[Record, Manifest] | None = None
        self._told_no_ca = False

    def __call__(self, record: Record, manifest: Manifest) -> None:
        """Publish the CA ``manifest`` holds, if any and if allowed.

        Raises StoreError/ConsulUnavailable when Consul fails (the daemon retries the
        sync); a ca/ca.crt that is not a certificate is logged and skipped.
        """
        # Its CA's entry alone: the daemon holds no entry of the tree between its commits.
        manifest = Manifest(tuple(manifest.find(self.ca_entry).values()))
        with self._lock:
            self._last = (record, manifest)
            self._run(record, manifest)

    def retry(self) -> None:
        """Compare the last committed CA with Consul again now (an operator's record has arrived)."""
        with self._lock:
            if self._last is not None:
                self._done_sha = ""
                self._run(*self._last)

    def _run(self, record: Record, manifest: Manifest) -> None:
        entry = next((e for e in manifest.entries if e.path == self.ca_entry), None)
        if entry is None or entry.type != FILE:
            if not self._told_no_ca:  # the second master of an HA zone: nothing of its own to publish
                log.info(f"this master's snapshot holds no {self.ca_entry}: it publishes no CA (the master beside "
                         f"the CA does)", snapshot=record.id)
                self._told_no_ca = True
            return
        self._told_no_ca = False
        now = self.clock()
        # A conflicted publisher looks again at every sync: an operator's decision may be waiting.
        if not self.conflicted and entry.sha256 == self._done_sha and now - self._done_at < self.recheck:
            return
        pem = self._content(entry)
        published = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        try:
            doc = cadoc.from_pem(pem, published=published, node=self.repo.layout.node, snapshot=record.id)
        except CorruptData as exc:
            log.warning(f"{CA_CERT} is not a certificate; not published", snapshot=record.id, error=str(exc))
        else:
            self.publish(doc)
        self._done_sha, self._done_at = entry.sha256, now

    def publish(self, doc: PublishedCA) -> str:
        """Write ``doc`` unless the same certificate is already published or it may not replace it.

        Returns "published" (first time), "unchanged", "renewed" (same key), "accepted"
        (another key, an operator's record consumed), "replaced" (another key, by
        on_conflict=keep-local) or "refused" (another key, no decision: conflicted).
        Raises StoreError; CasConflict when another writer changed a key meanwhile (the
        next call compares again).
        """
        store, layout = self.repo.store, self.repo.layout
        pair = store.get(layout.ca)
        old = None
        if pair is not None:
            try:
                old = cadoc.decode(pair.value)
            except CorruptData as exc:
                log.warning("the published CA is invalid; replacing it", key=layout.ca, error=str(exc))
        fields = dict(key=layout.ca, snapshot=doc.snapshot, ca_spki_sha256=doc.spki_sha256,
                      ca_cert_sha256=doc.cert_sha256)
        if doc.same_content(old):
            log.debug("published CA unchanged", **fields)
            self._settled(doc)
            return "unchanged"
        if old is None:
            ops = [*self.fence(), Op("cas", layout.ca, cadoc.encode(doc),
                                     index=pair.modify_index if pair is not None else 0)]
            accept_index, accepted = self._acceptance()
            if accepted is not None and accepted.allows("", doc.spki_sha256):
                ops.append(Op("delete-cas", layout.ca_accept, index=accept_index))
            store.txn(ops)
            self._settled(doc)
            log.info("CA published", **fields)
            return "published"
        if old.spki_sha256 == doc.spki_sha256:
            # Icinga 2 renews its CA keeping the key pair; satellites must not purge on that.
            self._replace(pair, old, doc, "renewal")
            log.info("CA certificate renewed with the same key; published", previous_cert_sha256=old.cert_sha256,
                     **fields)
            return "renewed"
        fields.update(published_spki_sha256=old.spki_sha256, published_by=old.node,
                      published_snapshot=old.snapshot)
        accept_index, accepted = self._acceptance()
        if accepted is not None and accepted.allows(old.spki_sha256, doc.spki_sha256):
            self._replace(pair, old, doc, "accepted", accepted, accept_index)
            log.warning("CA key changed as accepted by an operator (statesync accept-ca); published the new CA, "
                        "satellites will enrol again", operator=accepted.operator, reason=accepted.reason,
                        accepted_at=accepted.time, **fields)
            return "accepted"
        foreign = bool(self._mine) and old.spki_sha256 != self._mine
        if self.on_conflict == "keep-local" and not foreign:
            self._replace(pair, old, doc, "on_conflict=keep-local")
            log.error("CA key differs from the published one and on_conflict=keep-local overrides the guard: "
                      "published the local CA, satellites will enrol again (use statesync accept-ca instead)",
                      **fields)
            return "replaced"
        self._conflict(old, doc, foreign, fields)
        return "refused"

    def _acceptance(self) -> tuple[int, ca_acceptance.Acceptance | None]:
        """The pending operator record's ModifyIndex and the record, or (0, None)."""
        try:
            pending = ca_acceptance.read_pending(self.repo.store, self.repo.layout.ca_accept)
        except PermissionDenied as exc:
            # A token made from an older master policy: no decision can be read, so none is taken.
            log.warning("cannot read the CA acceptance record", error=str(exc))
            return 0, None
        if pending.invalid:
            log.warning("the CA acceptance record is invalid; ignored", key=self.repo.layout.ca_accept,
                        error=pending.invalid)
            return 0, None
        return pending.index, pending.record

    def _replace(self, pair, old: PublishedCA, doc: PublishedCA, decision: str,
                 accepted: ca_acceptance.Acceptance | None = None, accept_index: int = 0) -> None:
        """Overwrite the published ``old`` with ``doc`` and file ``old`` in the history, in one
        transaction; an acceptance record is deleted in it too, so that it is used once."""
        store, layout = self.repo.store, self.repo.layout
        ops = [*self.fence(), Op("cas", layout.ca, cadoc.encode(doc), index=pair.modify_index)]
        try:
            hist = store.get(layout.ca_history)
        except PermissionDenied as exc:
            # A token made from an older master policy: the history is informative, the publication is not.
            log.warning("cannot read the CA history; publishing without recording the replaced CA", error=str(exc))
        else:
            history = ca_acceptance.decode_history(hist.value if hist is not None else None)
            entry = ca_acceptance.history_entry(old, doc, decision, accepted)
            ops.append(Op("cas", layout.ca_history, ca_acceptance.with_entry(history, entry),
                          index=hist.modify_index if hist is not None else 0))
        if accepted is not None:
            ops.append(Op("delete-cas", layout.ca_accept, index=accept_index))
        store.txn(ops)
        self._settled(doc)

    def _settled(self, doc: PublishedCA) -> None:
        self._mine = doc.spki_sha256
        if self.conflicted:
            log.warning("CA conflict resolved: the published CA is this node's", ca_spki_sha256=doc.spki_sha256)
        self.conflicted, self._alerted = False, ()
        metrics.ca_conflict.set(0)

    def _conflict(self, old: PublishedCA, doc: PublishedCA, foreign: bool, fields: dict) -> None:
        self.conflicted = True
        metrics.ca_conflict.set(1)
        seen = (old.spki_sha256, old.cert_sha256, doc.spki_sha256)
        if seen == self._alerted:
            log.debug("CA conflict persists; not published", **fields)
            return
        self._alerted = seen
        why = ("another publisher replaced the CA this node published; not fighting over it"
               if foreign else "the local CA has another key than the published one")
        log.error(f"CA conflict: {why}. The local CA is NOT published; satellites keep the published one. "
                  f"Run statesync accept-ca on this node to publish it, or restore the published CA",
                  **fields)

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



class AcceptanceWatcher:
    """Follows ``<prefix>/ca-accept`` with a blocking query, so that a conflicted master publishes
    an accepted CA within moments of ``statesync accept-ca`` rather than at its next sync."""

    def __init__(self, publisher: CaPublisher, wait_s: float = 55.0):
        self.publisher = publisher
        self.wait_s = wait_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="ca-accept-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 0.5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _watch(self) -> None:
        store, key = self.publisher.repo.store, self.publisher.repo.layout.ca_accept

        def on_news(pair, first: bool) -> None:
            # Not only when conflicted: the record may land while a publication is deciding. The
            # first answer is no change: the sidecar publishes at its first sync anyway.
            if not first and pair is not None:
                self.publisher.retry()

        # Any failure (Consul away, the lock lost, a bug) is retried: the next sync retries anyway.
        Watch(key_query(store, key, self.wait_s), on_news, self._stop, Backoff(4.0, 60.0),
              "the CA acceptance record", key, level="debug", retry_on=Exception).run()
