"""Snapshots of one node in Consul: load, commit, prune and collect garbage.

Commit order is what makes a snapshot all-or-nothing: every chunk first (in
filled transactions or plain PUTs), then one transaction that writes the
snapshot record, moves ``head`` with check-and-set and drops records past the
retention. A writer killed at any moment leaves ``head`` on the previous
complete snapshot; what it uploaded before dying is garbage, collected later.
"""
from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

import structlog

from .. import metrics
from ..consul.bulk import BulkWriter
from ..consul.client import Op
from ..consul.store import Store
from ..errors import CasConflict, CorruptData, EncryptionKeyError, MissingChunks, NotFound, SuspiciousDrop
from ..jsonload import loads
from ..snapshot import chunking, codec, manifest_reader
from ..snapshot import manifest as mf
from ..snapshot.crypto import Sealer
from ..snapshot.history import id_time, next_seq
from ..snapshot.keep_rules import Rules, Snap
from ..snapshot.layout import Layout
from ..snapshot.manifest import Manifest
from ..snapshot.record import CA_META, SEQ_META, Record, decode_record, new_id, suspicious_drop
from ..tree.scan import ScanResult
from . import prune
from .refsets import Known, RefSets

log = structlog.get_logger(__name__)

# One transaction carries a small commit whole; beyond this the chunks go first.
_SINGLE_TXN_BYTES = 256 * 1024
# A sealed chunk's header, nonce and tag, rounded up.
_SEAL_SLACK = 64
_GC_PENDING_MAX = 4000


@dataclass(frozen=True)
class Head:
    """The head as last read: its record (None when the node has none) and ModifyIndex."""

    record: Record | None
    index: int


@dataclass(frozen=True)
class CommitResult:
    record: Record
    head: Head
    chunks_written: int
    chunks_reused: int
    bytes_written: int
    kv_writes: int
    seconds: float


class Repo:
    """The snapshots of one node, read and written through a Store."""

    def __init__(self, store: Store, layout: Layout, chunk_size: int, keep: int = 10,
                 sealer: Sealer | None = None, seal_manifest: bool = False, rules: Rules | None = None,
                 ca_identity: Callable[[Manifest], str] | None = None):
        """``rules`` decide what each commit prunes (default: the newest ``keep``, the newest of
        each CA, pins, the head); ``ca_identity`` gives a manifest's CA identity (SPKI SHA-256,
        "" when unknown) for its record: pki/ is out of this layer's reach."""
        self.store = store
        self.layout = layout
        self.chunk_size = chunk_size
        self.keep = keep
        self.rules = rules or Rules(keep=keep)
        self.ca_identity = ca_identity
        self.records_seen = prune.RecordCache(store, layout)
        self._kept: set[str] = set()
        self._clock_behind = False
        self.sealer = sealer
        self.seal_manifest = seal_manifest and sealer is not None
        self._refsets = RefSets()
        self._manifest_encoder = mf.Encoder()

    # -- reading -------------------------------------------------------------------

    def head(self) -> Head:
        """Read the head; a node without snapshots has ``Head(None, 0)``."""
        pair = self.store.get(self.layout.head)
        if pair is None:
            return Head(None, 0)
        return Head(decode_record(pair.value), pair.modify_index)

    def checked_head(self, fence: tuple[Op, ...] = ()) -> Head:
        """The head, for a writer: when its key is gone while snapshot records remain, that is
        damage, not a fresh start. It is logged, counted, and the newest record in commit order
        (never by the clock its id carries) is put back as the head (check-and-set on an absent
        key), so that nothing is ever committed over the history as if the node had none."""
        head = self.head()
        if head.record is not None:
            return head
        records = self.records()
        if not records:
            return head
        newest = records[-1]
        metrics.damage.labels(kind="head-missing").inc()
        log.error("the head key is missing while snapshot records remain; re-pointing it to the newest snapshot "
                  "in commit order", key=self.layout.head, snapshots=len(records), snapshot=newest.id)
        try:
            self.store.put(self.layout.head, newest.encode(), cas=0, fence=fence)
        except CasConflict:
            pass  # another writer put a head back meanwhile: take that one
        return self.head()

    def record(self, snapshot_id: str | None = None) -> Record:
        """Return the record of ``snapshot_id``, or of the head; raise NotFound.

        Without a head key but with snapshot records (damage), the newest record in commit
        order is the head's content by construction: it is returned, with a warning, and
        nothing written.
        """
        if snapshot_id is None:
            head = self.head()
            if head.record is None:
                records = self.records()
                if records:
                    log.warning("the head key is missing; using the newest snapshot record in commit order",
                                key=self.layout.head, snapshot=records[-1].id)
                    return records[-1]
                raise NotFound(f"node {self.layout.node!r} has no snapshot under {self.layout.node_root}")
            return head.record
        pair = self.store.get(self.layout.snapshot(snapshot_id))
        if pair is None:
            raise NotFound(f"node {self.layout.node!r} has no snapshot {snapshot_id!r}")
        return decode_record(pair.value)

    def records(self, head: str = "") -> list[Record]:
        """Every kept snapshot record of the node, oldest first in commit order (``head``'s chain last)."""
        return prune.ordered_records(self.store.get_prefix(self.layout.snapshots), self.layout, head)

    def fetch_chunks(self, digests: set[str], sealed: set[str] = frozenset(), key_id: str = "",
                     sizes: Mapping[str, int] | None = None) -> dict[str, bytes]:
        """Fetch and verify chunks, decrypting those in ``sealed``; return plaintext by address.

        Only the chunks asked for are read, by key, however many others (older versions,
        garbage) the node holds; ``sizes`` (expected size by address, default the chunk
        size) lets the reads be batched by bytes. Raises CorruptData when one is missing or
        damaged, EncryptionKeyError when sealed chunks need a key that is not configured, or
        another than the one configured.
        """
        if sealed:
            self._check_key(key_id)
        wanted = set(digests) | set(sealed)
        prefix, n = self.layout.chunks, len(self.layout.chunks)
        sizes = sizes or {}
        values = self.store.get_many((prefix + d, sizes.get(d, self.chunk_size)) for d in sorted(wanted))
        found = {key[n:]: value for key, value in values.items()}
        missing = wanted - found.keys()
        if missing:
            first = sorted(missing)[0]
            raise CorruptData(f"{len(missing)} chunk(s) missing from Consul, first {first[:16]}…")
        for digest, data in found.items():
            # A stored chunk may not expand beyond the size its manifest claims for it.
            limit = sizes.get(digest) or chunking.MAX_CHUNK_SIZE
            if digest in sealed:
                data = self.sealer.decrypt(self.layout.node, digest, data)
                found[digest] = codec.decode(data, digest, limit, self.sealer.address)
            else:
                found[digest] = codec.decode(data, digest, limit)
        return found

    def _check_key(self, key_id: str) -> None:
        if self.sealer is None:
            raise EncryptionKeyError(f"node {self.layout.node!r} has encrypted data and no encryption key is "
                                     f"configured (encryption_key_file)")
        if key_id and key_id != self.sealer.key_id:
            raise EncryptionKeyError(f"the data was encrypted with key id {key_id}, the configured key has id "
                                     f"{self.sealer.key_id}")

    def file_bytes(self, entry: mf.Entry, contents: dict[str, bytes]) -> bytes:
        """Join a file's verified chunks and check its whole-content address; raise CorruptData."""
        if not entry.sealed and entry.chunks == (entry.sha256,):
            data = contents[entry.sha256]  # one plain chunk: verified under this very address already
        else:
            hasher = self.sealer.address if entry.sealed and self.sealer else chunking.sha256
            data = chunking.join(entry.sha256, [contents[d] for d in entry.chunks], hasher)
        if len(data) != entry.size:
            raise CorruptData(f"{entry.path}: content is {len(data)} bytes, the manifest says {entry.size}")
        return data

    def contents(self, record: Record, manifest: Manifest) -> dict[str, bytes]:
        """Every file chunk of a snapshot, fetched, verified and decrypted."""
        sealed = manifest.sealed_refs()
        return self.fetch_chunks(manifest.chunk_refs() - sealed, sealed, record.key_id,
                                 chunk_sizes(manifest, record.chunk_size or self.chunk_size))

    def manifest(self, record: Record) -> Manifest:
        """Fetch, verify and decode the manifest a record names, a few pieces at a time (``manifest_reader.load``)."""
        def fetch(batch: set[str]) -> dict[str, bytes]:
            if record.sealed_manifest:
                return self.fetch_chunks(set(), batch, record.key_id)
            return self.fetch_chunks(batch)
        manifest = manifest_reader.load(record.manifest_chunks, fetch, record.manifest_sha256)
        if manifest is None:
            raise CorruptData(f"manifest of snapshot {record.id} fails its sha256 check")
        return manifest

    def refs(self, record: Record) -> frozenset[str]:
        """Every chunk a snapshot needs: its manifest's chunks and its files' chunks. The last
        snapshot asked for is held whole, the other kept ones compactly (``refsets``)."""
        return self._refsets.get(record.id, lambda: self._load_refs(record))

    def _load_refs(self, record: Record) -> frozenset[str]:
        return frozenset(self.manifest(record).chunk_refs() | set(record.manifest_chunks))

    # -- writing -------------------------------------------------------------------

    def commit(self, scan: ScanResult, base: Head, known: Known | set[str], meta: dict | None = None,
               fence: tuple[Op, ...] = (), sent: Collection[str] = frozenset(), sent_bytes: int = 0,
               max_drop: float = 1.0) -> CommitResult | None:
        """Commit the scanned tree as a new snapshot on top of ``base``; None when it equals ``base``.

        ``fence`` operations (the writer lock's ``check-session``) open every transaction
        of the commit, the final one included; LockLost when one fails. ``sent`` names the
        chunks written while scanning (``chunk_stream``), of ``sent_bytes`` in all.

        Only the chunks ``base`` references count as stored, whatever the caller believes:
        garbage collection deletes any other chunk, and a commit that named one without
        uploading it would publish a snapshot that cannot be restored. ``known`` (what the
        scan was told is stored) is set to the chunks of the new head. Raises MissingChunks
        when the manifest needs a chunk that is neither in ``base`` nor read by the scan,
        CasConflict when the head moved since ``base`` was read, SuspiciousDrop when the tree
        lost more than ``max_drop`` of its files or bytes since ``base``,
        ConsulUnavailable/StoreError on failures.
        """
        started = time.monotonic()
        writes_before = self.store.stats.kv_writes
        m = scan.manifest
        why = suspicious_drop(base.record, m.file_count, m.total_bytes, max_drop)
        if why is not None:
            metrics.suspicious_drops.inc()
            raise SuspiciousDrop(f"not committed: {why}; if the files were removed on purpose, stop the "
                                 "sidecar and run `statesync backup --allow-drop`")
        needed = m.chunk_refs()
        stored = self.refs(base.record) if base.record is not None else frozenset()
        # Sets of what is missing or new only, never a copy of every chunk: a tree of small
        # files has one per file (the first commit of 300,000: tens of megabytes a copy).
        absent = [d for d in needed if d not in stored and d not in scan.new_chunks and d not in sent]
        if absent:
            raise MissingChunks(f"{len(absent)} chunk(s) are neither stored nor read")
        # Cut where its segments end: one changed file rewrites about two pieces, not all of them.
        manifest_pieces = self._manifest_encoder.pieces(m, self.chunk_size)
        whole = hashlib.sha256()  # of the pieces joined, without a copy of them joined
        for p in manifest_pieces:
            whole.update(p)
        manifest_sha256, manifest_size = whole.hexdigest(), sum(map(len, manifest_pieces))
        if base.record is not None and manifest_sha256 == base.record.manifest_sha256:
            return None
        name = self.sealer.address if self.seal_manifest else chunking.sha256
        manifest_digests = tuple(name(p) for p in manifest_pieces)
        uploads, upload_bytes = len(sent), sent_bytes
        pending: dict[str, bytes] = {}  # what goes up now: uploads the scan has not sent
        for d, p in scan.new_chunks.items():
            if d in needed and d not in stored and d not in sent:
                uploads, upload_bytes = uploads + 1, upload_bytes + len(p)
                pending[d] = p
        for d, p in zip(manifest_digests, manifest_pieces, strict=True):
            if d not in stored and d not in pending:
                pending[d] = self.sealer.seal(self.layout.node, d, p) if self.seal_manifest else p
                uploads, upload_bytes = uploads + 1, upload_bytes + len(pending[d])
        tally = m.tally
        sealed = self.seal_manifest or tally.sealed
        meta = dict(meta or {})
        if self.ca_identity is not None and (ca := self.ca_identity(m)):
            meta[CA_META] = ca
        snaps = self.records_seen.snaps(self.records_seen.ids())
        now = datetime.now(timezone.utc)
        self._check_clock(now, base.record)
        meta[SEQ_META] = next_seq([*snaps, *([prune.snap(base.record)] if base.record else [])])
        rec = Record(id=new_id(now), node=self.layout.node, created=now.isoformat(timespec="milliseconds"),
                     files=tally.files, dirs=tally.dirs, symlinks=tally.symlinks, bytes=tally.bytes,
                     manifest_chunks=manifest_digests, manifest_sha256=manifest_sha256,
                     manifest_size=manifest_size, parent=base.record.id if base.record else "",
                     chunk_size=self.chunk_size, meta=meta,
                     key_id=self.sealer.key_id if sealed else "", sealed_manifest=self.seal_manifest,
                     # Sticky: chunks reused from the base may be compressed even when this scan's are not.
                     compression=scan.compression or (base.record.compression if base.record else ""))
        final = self._final_ops(rec, base, fence, snaps)
        pending_bytes = sum(len(p) for p in pending.values())
        if pending_bytes <= _SINGLE_TXN_BYTES and len(pending) + len(final) <= self.store.settings.txn_max_ops:
            ops = [Op("set", self.layout.chunk(d), p) for d, p in pending.items()] + final
        else:
            self.store.put_many(((self.layout.chunk(d), p) for d, p in pending.items()), fence=fence)
            ops = final
        head = self._apply_final(ops, rec, base)
        needed.update(manifest_digests)
        refs: frozenset[str] = needed  # type: ignore[assignment]  # never changed again: a frozen copy is one more table
        self._refsets.set_whole(rec.id, refs)
        if isinstance(known, Known):
            known.refs = refs
        else:
            known.clear()
            known.update(refs)
        self.records_seen.add(rec)
        # Only kept snapshots are asked for again.
        self._refsets.keep(self._kept)
        return CommitResult(rec, head, uploads, max(0, len(refs) - uploads),
                            upload_bytes, self.store.stats.kv_writes - writes_before + uploads - len(pending),
                            time.monotonic() - started)

    def chunk_stream(self, fence: tuple[Op, ...] = ()) -> "ChunkStream":
        """A writer of chunks for ``Scanner.scan(sink=...)``; pass its ``sent`` to ``commit``."""
        return ChunkStream(BulkWriter(self.store, fence), self.layout.chunks)

    def _check_clock(self, now: datetime, newest: Record | None) -> None:
        """Warn, once until it catches up, when this writer's clock runs behind the newest record's:
        one of the two clocks is wrong, and only commit order (``history``) says which came first."""
        behind = newest is not None and now < id_time(newest.id)
        if behind and not self._clock_behind:
            log.warning("this writer's clock runs behind the newest snapshot's: one of the two clocks is wrong; "
                        "snapshots are ordered by commit, not by clock", node=self.layout.node,
                        clock=now.isoformat(timespec="microseconds"), snapshot=newest.id,
                        snapshot_clock=id_time(newest.id).isoformat(timespec="microseconds"))
        self._clock_behind = behind

    def _final_ops(self, rec: Record, base: Head, fence: tuple[Op, ...], snaps: list[Snap]) -> list[Op]:
        encoded = rec.encode()
        ops = [*fence, Op("set", self.layout.snapshot(rec.id), encoded),
               Op("cas", self.layout.head, encoded, index=base.index)]
        snaps = [s for s in snaps if s.id != rec.id] + [prune.snap(rec)]
        deletes, self._kept = prune.prune_ops(self.store, self.layout, snaps, self.rules, rec.id,
                                              self.store.settings.txn_max_ops - len(ops))
        return ops + deletes

    def _apply_final(self, ops: list[Op], rec: Record, base: Head) -> Head:
        try:
            results = self.store.txn(ops)
        except CasConflict:
            # The answer to an applied transaction can be lost; the head then names us.
            current = self.head()
            if current.record is not None and current.record.id == rec.id:
                return current
            raise CasConflict(f"head of node {self.layout.node!r} moved during the commit "
                              f"(expected index {base.index}, now {current.index})") from None
        index = next((p.modify_index for p in results if p.key == self.layout.head), 0)
        return Head(rec, index)

    # -- garbage -------------------------------------------------------------------

    def collect_garbage(self, grace: float, now: float | None = None, fence: tuple[Op, ...] = ()) -> int:
        """Delete chunks no kept snapshot needs and that were already unreferenced
        ``grace`` seconds ago; return how many were deleted.

        The grace period protects a concurrent commit that uploaded chunks but has not
        yet moved the head. ``fence`` opens every write (LockLost when it fails).
        Raises StoreError/ConsulUnavailable.
        """
        now = time.time() if now is None else now
        records = self.records()
        head = self.head()
        by_id = {r.id: r for r in [*records, *([head.record] if head.record is not None else [])]}
        referenced = self._refsets.union(by_id, lambda sid: self._load_refs(by_id[sid]))
        self._refsets.keep({r.id for r in records})
        # Listed a sixteenth at a time (by the digest's first character), and only the chunks no
        # snapshot needs kept: a listing of every chunk key is a string per file, twice (the
        # answer's text and its list), beside the set of what is stored.
        unreferenced: set[str] = set()
        for first in "0123456789abcdef":
            for key in self.store.keys(self.layout.chunks + first):
                d = self.layout.digest_of_chunk_key(key)
                if d and d not in referenced:
                    unreferenced.add(d)
        pair = self.store.get(self.layout.gc)
        pending = _decode_gc(pair.value) if pair else {}
        collectable = sorted(d for d in unreferenced if d in pending and now - pending[d] >= grace)
        keep_pending = {d: pending.get(d, now) for d in unreferenced if d not in collectable}
        if len(keep_pending) > _GC_PENDING_MAX:
            keep_pending = dict(sorted(keep_pending.items(), key=lambda kv: kv[1])[:_GC_PENDING_MAX])
        # The check-and-set serialises collectors: the loser of a race deletes nothing.
        self.store.put(self.layout.gc, _encode_gc(keep_pending), cas=pair.modify_index if pair else 0, fence=fence)
        if collectable:
            self.store.delete_many((self.layout.chunk(d) for d in collectable), fence=fence)
            log.info("garbage collected", node=self.layout.node, chunks=len(collectable), pending=len(keep_pending))
        return len(collectable)


class ChunkStream:
    """Uploads the chunks a scan reads while it goes on reading (``Store.BulkWriter``).

    Only full transactions are sent; the chunks left over go with the commit. What was
    sent before a commit fails is garbage like any upload of a failed commit: collected
    once unreferenced for ``gc_grace``, and never counted as stored (``known``) before
    the commit that references it has succeeded.
    """

    def __init__(self, writer: BulkWriter, chunks_prefix: str):
        self._writer, self._prefix = writer, chunks_prefix

    def add(self, digest: str, data: bytes) -> None:
        self._writer.add(self._prefix + digest, data, tag=digest)

    def written(self, digest: str) -> bool:
        """True once the chunk is in Consul: for ``Scanner.scan(written=...)``."""
        return digest in self._writer.sent

    @property
    def sent(self) -> set[str]:
        """The digests written so far (complete once the stream is closed)."""
        return self._writer.sent

    @property
    def sent_bytes(self) -> int:
        return self._writer.sent_bytes

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "ChunkStream":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self._writer.__exit__(kind, exc, tb)


def chunk_size_of(e: mf.Entry, i: int, chunk_size: int) -> int:
    """The stored size the ``i``-th chunk of file ``e`` is expected to have (sealed ones a little more)."""
    return max(0, min(chunk_size, e.size - i * chunk_size)) + (_SEAL_SLACK if e.sealed else 0)


def chunk_sizes(manifest: Manifest, chunk_size: int) -> dict[str, int]:
    """The stored size each file chunk of ``manifest`` is expected to have (``chunk_size_of``)."""
    return {d: chunk_size_of(e, i, chunk_size) for e in manifest.entries for i, d in enumerate(e.chunks)}


def _encode_gc(pending: dict[str, float]) -> bytes:
    return zlib.compress(json.dumps({"v": 1, "pending": {d: round(t, 1) for d, t in pending.items()}}).encode())


def _decode_gc(blob: bytes) -> dict[str, float]:
    try:
        doc = loads(zlib.decompress(blob))
        return {str(d): float(t) for d, t in doc["pending"].items()}
    except (zlib.error, ValueError, KeyError, TypeError, AttributeError):
        log.warning("garbage collector state unreadable; starting over")
        return {}
