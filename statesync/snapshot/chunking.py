"""Content addressing: cutting bytes into chunks named by their sha256. Pure."""
from __future__ import annotations

import hashlib
from collections.abc import Iterator

from ..errors import CorruptData

# Consul refuses values above 512 KiB; stay clearly below it.
MAX_CHUNK_SIZE = 512 * 1024 - 1024
DEFAULT_CHUNK_SIZE = 256 * 1024


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
