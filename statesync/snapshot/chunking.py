"""Content addressing: cutting bytes into chunks named by their sha256. Pure."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from ..errors import CorruptData

# Consul refuses values above 512 KiB; stay clearly below it.
MAX_CHUNK_SIZE = 512 * 1024 - 1024
# The largest round size below consul.settings.FENCED_VALUE_MAX (359 KiB) that leaves room for a
# sealed chunk's 64 bytes: a larger zstd frame compresses Icinga 2's state 7 % better than 256 KiB
# (16.1x against 15.0x at level 1, bench/dump_cost.py), so it stands in for a second pass.
DEFAULT_CHUNK_SIZE = 352 * 1024
# The smallest chunk size a writer may be set to (config.py): a manifest's bounds rely on it.
MIN_CHUNK_SIZE = 4096


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split(data: bytes, chunk_size: int) -> Iterator[bytes]:
    """Yield consecutive pieces of ``data`` of at most ``chunk_size`` bytes (none for b"")."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    view = memoryview(data)
    for start in range(0, len(data), chunk_size):
        yield bytes(view[start:start + chunk_size])


def address(data: bytes, chunk_size: int, hasher=sha256) -> tuple[str, list[tuple[str, bytes]]]:
    """Return the whole-content address and the ``(address, piece)`` list of its chunks.

    ``hasher`` names content: sha256 for plain chunks, a keyed address for sealed ones.
    """
    pieces = [(hasher(p), p) for p in split(data, chunk_size)]
    if len(pieces) == 1:
        return pieces[0][0], pieces
    return hasher(data), pieces


def verify(digest: str, data: bytes) -> bytes:
    """Return ``data`` if it hashes to ``digest``; raise CorruptData otherwise."""
    if sha256(data) != digest:
        raise CorruptData(f"chunk {digest[:16]}… fails its sha256 check")
    return data


def join(digest: str, pieces: list[bytes], hasher=sha256) -> bytes:
    """Concatenate chunks and check the whole-content digest (``hasher`` names content)."""
    data = b"".join(pieces)
    if hasher(data) != digest:
        raise CorruptData(f"content {digest[:16]}… fails its sha256 check after joining chunks")
    return data


def pieces(read: Callable[[int, int], bytes], chunk_size: int) -> Iterator[bytes]:
    """The pieces ``split`` would cut, from ``read(offset, n)`` (a pread) instead of bytes in
    memory: a chunk at a time, until a read comes back short."""
    offset = 0
    while True:
        piece = read(offset, chunk_size)
        while piece and len(piece) < chunk_size and (more := read(offset + len(piece), chunk_size - len(piece))):
            piece += more
        if piece:
            yield piece
            offset += len(piece)
        if len(piece) < chunk_size:
            return


class Read:
    """The addresses of one read of a file, taken piece by piece: what ``address`` gives for
    the whole content, without it ever being whole in memory. ``whole`` is the hash object of
    the whole-content address (sha256 when None; the sealer's keyed one for sealed files)."""

    def __init__(self, whole=None, sealed: bool = False, plain_secret: bool = False):
        self._whole = whole if whole is not None else hashlib.sha256()
        self.sealed, self.plain_secret = sealed, plain_secret
        self.size = 0
        self.chunks: tuple[str, ...] = ()
        self._digests: list[str] = []
        self.digest = ""

    def add(self, piece: bytes, digest: str) -> str:
        self._whole.update(piece)
        self.size += len(piece)
        self._digests.append(digest)
        return digest

    def end(self) -> "Read":
        self.chunks = tuple(self._digests)
        self.digest = self.chunks[0] if len(self.chunks) == 1 else self._whole.hexdigest()
        return self
