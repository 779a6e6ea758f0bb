"""The scanner's memory of a plain file: a packed record instead of an Entry. Pure.

A scanner remembers every file of the tree between its scans (to reread only what changed),
and a tree of Icinga 2's API objects has hundreds of thousands of small files. As an Entry
with its stat signature a file cost about 500 bytes beside its path (the object, the hex
digest, the tuple of its one chunk, the signature, the tuple holding both); as a record it
costs about 160: a pair of bytes, which hold the signature itself (so ``fileinfo.inode`` and
friends read it in place; its mode, size, mtime and owner ids are the entry's) beside whether
it was settled when read and the index of its owners' names, and the digest. The digest stays the string the scan read (the chunk's name, which ``known`` and a
commit's sets hold too), so that the entry built again from the record for each manifest,
equal to the one it was packed from, shares it instead of a copy per file.

Only what the record holds exactly is packed: a file of one plain (unsealed) chunk whose
digest is a sha256 in lower-case hex, not a hard link, whose fields are those of the stat
its signature was made from. Every other entry stays as it was.
"""
from __future__ import annotations

import stat
import struct

from ..snapshot.manifest import FILE, Entry, Tally, tally_of
from .fileinfo import SIGNATURE_SIZE, file_size, stat_fields

# settled, owners (index into the scanner's names); the rest is the signature's. 63 bytes
# beside it: a bytes object of 96, which the allocator does not round up.
_FIELDS = struct.Struct("<?H")
_MAX_OWNERS = 1 << 16
# (signature and fields, digest)
Record = tuple[bytes, str]
_HEX = frozenset("0123456789abcdef")
# One int object per permission mode, shared by the entries built (0o644 is no small int).
_MODES: dict[int, int] = {}


def packable(e: Entry) -> bool:
    return (e.type == FILE and not e.sealed and not e.link and not e.target and len(e.chunks) == 1
            and e.chunks[0] == e.sha256 and len(e.sha256) == 64 and _HEX.issuperset(e.sha256))


class Owners:
    """The owners' names (user, group) that records refer to by index: a few pairs in any tree."""

    def __init__(self) -> None:
        self.names: list[tuple[str, str]] = []
        self._index: dict[tuple[str, str], int] = {}

    def index(self, user: str, group: str) -> int:
        i = self._index.setdefault((user, group), len(self.names))
        if i == len(self.names):
            self.names.append((user, group))
        return i


def pack(sig: bytes, settled: bool, e: Entry, owners: Owners) -> Record | None:
    """The record of ``e`` (``packable``), read with stat signature ``sig``; None when a field
    of ``e`` is not the signature's (a record could not give it back)."""
    if len(sig) != SIGNATURE_SIZE:
        raise ValueError("not a stat signature of tree/fileinfo")
    st_mode, size, mtime_ns, uid, gid = stat_fields(sig)
    if (e.mode, e.size, e.mtime_ns, e.uid, e.gid) != (stat.S_IMODE(st_mode), size, mtime_ns, uid, gid):
        return None
    at = owners.index(e.user, e.group)
    return (sig + _FIELDS.pack(settled, at), e.sha256) if at < _MAX_OWNERS else None


def settled(record: Record) -> bool:
    """Whether the file's timestamps were old enough when it was read for its signature to
    prove it unchanged (scan.RACY_NS)."""
    return record[0][SIGNATURE_SIZE] != 0


def same_signature(record: Record, sig: bytes) -> bool:
    return record[0].startswith(sig) and len(sig) == SIGNATURE_SIZE


def unpack(path: str, record: Record, owners: Owners) -> Entry:
    """The entry ``record`` was packed from, at ``path``."""
    st_mode, size, mtime_ns, uid, gid = stat_fields(record[0])
    mode = stat.S_IMODE(st_mode)
    digest = record[1]
    user, group = owners.names[_FIELDS.unpack_from(record[0], SIGNATURE_SIZE)[1]]
    return Entry(path, FILE, _MODES.setdefault(mode, mode), uid, gid, mtime_ns, size, digest, (digest,), user=user, group=group)


# What a scan's ``Manifest.tokens`` hold: a record; an Entry (a hard link's); or the scanner's
# (signature, entry, settled) of every other path. Counted and listed here without building
# the entry of each record (``manifest.Entries``).

def _entry_of(token) -> Entry | None:
    if isinstance(token, Entry):
        return token
    return None if len(token) == 2 else token[1]


def tally(tokens) -> Tally:
    """The counts a commit needs of the entries ``tokens`` stand for."""
    files = size = 0

    def unpacked():  # counts the records on the way, in the one pass
        nonlocal files, size
        for t in tokens:
            if (e := _entry_of(t)) is not None:
                yield e
            else:
                files, size = files + 1, size + file_size(t[0])

    counted = tally_of(unpacked())
    return Tally(counted.files + files, counted.bytes + size, counted.dirs, counted.symlinks, counted.sealed)


def chunk_refs(tokens) -> set[str]:
    """Every content chunk of the entries ``tokens`` stand for."""
    refs: set[str] = set()
    for t in tokens:
        e = _entry_of(t)
        if e is None:
            refs.add(t[1])
        else:
            refs.update(e.chunks)
    return refs
