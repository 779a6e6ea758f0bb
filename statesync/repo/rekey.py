"""Re-encrypting the kept snapshots of a node under a new key.

Sealed chunks are addressed by a key-dependent MAC, so a new key means new chunk
names and therefore new manifests. Each kept snapshot is rewritten in place (same
id): its sealed files re-sealed, its manifest re-encoded, its record replaced; the
head is moved last, with check-and-set. The old chunks become garbage and are
collected after the grace period.

A running sidecar would go on committing under the old key, so rekey is the node's
writer while it works: it takes the writer lock (``consul.lock.holding_writer_lock``), refusing
while a sidecar holds it, and fences every write with it as the daemon does.
"""
from __future__ import annotations

import dataclasses

import structlog

from ..consul.client import Op
from ..errors import CasConflict, NotFound
from ..snapshot import chunking
from ..snapshot import manifest as mf
from ..snapshot.crypto import Sealer
from ..snapshot.record import Record
from .repository import Repo

log = structlog.get_logger(__name__)


def rekey(old: Repo, new_sealer: Sealer, fence: tuple[Op, ...] = ()) -> int:
    """Rewrite every kept snapshot of ``old``'s node under ``new_sealer``; return how many.

    ``old`` must carry the current key; ``fence`` (the writer lock's) opens every write.
    Raises EncryptionKeyError, CorruptData, CasConflict (the head moved meanwhile),
    LockLost (the fence failed), StoreError.
    """
    head = old.head()
    if head.record is None:
        raise NotFound(f"node {old.layout.node!r} has no snapshot to re-encrypt")
    new = Repo(old.store, old.layout, old.chunk_size, old.keep, sealer=new_sealer, seal_manifest=old.seal_manifest)
    done = 0
    for record in old.records():
        rewritten = _rewrite(old, new, record, fence)
        ops = [*fence, Op("set", old.layout.snapshot(record.id), rewritten.encode())]
        if record.id == head.record.id:
            ops.append(Op("cas", old.layout.head, rewritten.encode(), index=head.index))
        try:
            old.store.txn(ops)
        except CasConflict:
            raise CasConflict("the head moved during rekey: stop the node's sidecar and run rekey again") from None
        done += 1
        log.info("re-encrypted snapshot", snapshot=record.id, key_id=new_sealer.key_id)
    return done


def _rewrite(old: Repo, new: Repo, record: Record, fence: tuple[Op, ...]) -> Record:
    manifest = old.manifest(record)
    contents = old.contents(record, manifest)
    uploads: dict[str, bytes] = {}
    entries = []
    for e in manifest.entries:
        if not e.sealed:
            entries.append(e)
            continue
        data = old.file_bytes(e, contents)
        digest, pieces = chunking.address(data, new.chunk_size, new.sealer.address)
        for d, piece in pieces:
            uploads[d] = new.sealer.seal(new.layout.node, d, piece)
        entries.append(dataclasses.replace(e, sha256=digest, chunks=tuple(d for d, _ in pieces)))
    blob = mf.encode(mf.Manifest(tuple(entries), manifest.root))
    pieces = list(chunking.split(blob, new.chunk_size))
    if new.seal_manifest:
        digests = tuple(new.sealer.address(p) for p in pieces)
        uploads.update({d: new.sealer.seal(new.layout.node, d, p) for d, p in zip(digests, pieces, strict=True)})
    else:
        digests = tuple(chunking.sha256(p) for p in pieces)
        uploads.update(zip(digests, pieces, strict=True))
    new.store.put_many(((new.layout.chunk(d), v) for d, v in uploads.items()), fence=fence)
    sealed = new.seal_manifest or any(e.sealed for e in entries)
    return dataclasses.replace(record, manifest_chunks=digests, manifest_sha256=chunking.sha256(blob),
                               manifest_size=len(blob), key_id=new.sealer.key_id if sealed else "")
