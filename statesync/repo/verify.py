"""``statesync verify``: fetch and check every chunk snapshots need, and write nothing.

Restore stops at the first bad chunk; an operator asking "is this whole?" wants every damaged
path and why. So each chunk is judged on its own (missing, cannot decrypt, cannot decompress,
checksum mismatch) and each file is damaged when one of its chunks is. Chunks are read in
batches of about ``READ_BATCH_BYTES`` in tree order, as restore reads them, and only a verdict
per distinct chunk is kept: memory follows the number of chunks, never their bytes, and a
chunk shared by several snapshots is fetched once.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..consul.settings import READ_BATCH_BYTES
from ..errors import CorruptData, EncryptionKeyError
from ..snapshot import chunking, codec
from ..snapshot.manifest import FILE, Entry, tree_ordered
from ..snapshot.record import Record
from .repository import Repo, chunk_size_of

MISSING = "missing chunk"
CHECKSUM = "checksum mismatch"
DECRYPT = "cannot decrypt"
DECOMPRESS = "cannot decompress"
MANIFEST = "(manifest)"


@dataclass(frozen=True)
class Damage:
    snapshot: str
    path: str  # MANIFEST when the snapshot's manifest itself cannot be read
    reason: str
    chunk: str = ""


@dataclass
class Report:
    snapshots: list[str] = field(default_factory=list)
    chunks: int = 0
    bytes: int = 0
    damage: list[Damage] = field(default_factory=list)

    @property
    def whole(self) -> bool:
        return not self.damage


# Slots: one is kept per distinct chunk, a file's worth each in a tree of small files.
@dataclass(frozen=True, slots=True)
class _Verdict:
    reason: str  # "" when whole
    size: int = 0


class Verifier:
    def __init__(self, repo: Repo, batch_bytes: int = READ_BATCH_BYTES):
        self.repo, self.batch_bytes = repo, batch_bytes
        self._seen: dict[str, _Verdict] = {}
        self.report = Report()

    def verify(self, records: Iterable[Record]) -> Report:
        for record in records:
            self.report.snapshots.append(record.id)
            self._snapshot(record)
        return self.report

    def _snapshot(self, record: Record) -> None:
        try:
            manifest = self.repo.manifest(record)
        except CorruptData as exc:
            self._manifest_damage(record, str(exc))
            return
        except EncryptionKeyError as exc:
            self._manifest_damage(record, f"{DECRYPT}: {exc}")
            return
        fresh = set(record.manifest_chunks) - self._seen.keys()
        self.report.chunks += len(fresh)
        self.report.bytes += record.manifest_size if fresh else 0
        for d in record.manifest_chunks:
            self._seen.setdefault(d, _Verdict(""))
        files = tree_ordered([e for e in manifest.entries if e.type == FILE and not e.link])
        chunk_size = record.chunk_size or self.repo.chunk_size
        sealed = manifest.sealed_refs()
        batch: dict[str, int] = {}
        pending = 0
        for e in files:
            for i, d in enumerate(e.chunks):
                if d in self._seen or d in batch:
                    continue
                batch[d] = chunk_size_of(e, i, chunk_size)
                pending += batch[d]
                if pending >= self.batch_bytes:
                    self._check(record, batch, sealed)
                    batch, pending = {}, 0
        if batch:
            self._check(record, batch, sealed)
        for e in files:
            self._file(record, e)

    def _manifest_damage(self, record: Record, why: str) -> None:
        """Say which manifest chunk is at fault, when one is; else why the whole does not decode."""
        sealed = set(record.manifest_chunks) if record.sealed_manifest else set()
        self._check(record, {d: chunking.MAX_CHUNK_SIZE for d in record.manifest_chunks}, sealed)
        bad = [(d, self._seen[d].reason) for d in record.manifest_chunks if self._seen[d].reason]
        if bad:
            d, reason = bad[0]
            self.report.damage.append(Damage(record.id, MANIFEST, reason, d))
        else:
            self.report.damage.append(Damage(record.id, MANIFEST, why))

    def _file(self, record: Record, e: Entry) -> None:
        for d in e.chunks:
            v = self._seen[d]
            if v.reason:
                self.report.damage.append(Damage(record.id, e.path, v.reason, d))
                return
        total = sum(self._seen[d].size for d in e.chunks)
        if total != e.size:
            self.report.damage.append(Damage(record.id, e.path, f"{CHECKSUM}: content is {total} bytes, "
                                                                f"the manifest says {e.size}"))

    def _check(self, record: Record, batch: dict[str, int], sealed: set[str]) -> None:
        prefix = self.repo.layout.chunks
        values = self.repo.store.get_many((prefix + d, size) for d, size in sorted(batch.items()))
        for d, size in batch.items():
            stored = values.get(prefix + d)
            self.report.chunks += 1
            self.report.bytes += len(stored or b"")
            self._seen[d] = self._judge(record, d, stored, d in sealed, size or chunking.MAX_CHUNK_SIZE)

    def _judge(self, record: Record, digest: str, stored: bytes | None, sealed: bool, limit: int) -> _Verdict:
        if stored is None:
            return _Verdict(MISSING)
        hasher = chunking.sha256
        if sealed:
            sealer = self.repo.sealer
            if sealer is None:
                return _Verdict(f"{DECRYPT}: no encryption key is configured (encryption_key_file)")
            try:
                stored = sealer.decrypt(self.repo.layout.node, digest, stored)
            except CorruptData:
                if record.key_id and record.key_id != sealer.key_id:
                    return _Verdict(f"{DECRYPT}: sealed with key id {record.key_id}, the configured key has id "
                                    f"{sealer.key_id}")
                return _Verdict(f"{DECRYPT}: fails authentication (wrong key, or tampered with)")
            hasher = sealer.address
        if hasher(stored) == digest:
            return _Verdict("", len(stored))
        if not stored or stored[0] not in codec.TAGS.values():
            return _Verdict(CHECKSUM)
        try:
            plain = codec.decode(stored, digest, limit, hasher)
        except CorruptData as exc:
            # codec tells a frame that inflates to other content from one that does not inflate.
            return _Verdict(CHECKSUM if "after decompression" in str(exc) else DECOMPRESS)
        return _Verdict("", len(plain))


def verify(repo: Repo, records: Iterable[Record], batch_bytes: int = READ_BATCH_BYTES) -> Report:
    """Check every chunk ``records`` need, each distinct chunk once; a Report listing every damaged path."""
    return Verifier(repo, batch_bytes).verify(records)
