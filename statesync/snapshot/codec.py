"""Compressed chunks: the stored form of a chunk's plaintext, and back. Pure.

A stored chunk is either the plaintext itself (raw, untagged: every chunk written
before compression existed, and any chunk compression does not pay for) or one tag
byte followed by the compressed plaintext. A reader tells them apart by
verification: raw bytes hash to the chunk's address; anything else is decoded by its
tag and must then hash to that address. So the address stays that of the plaintext,
a chunk reused from an old snapshot needs nothing, and the decision is per chunk.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable

from ..errors import CorruptData
from .chunking import sha256

try:
    import zstandard
except ImportError:  # pragma: no cover - a declared dependency; zlib still works without it
    zstandard = None

# Measured on Icinga 2 state generated in its own format (docs/FORMAT.md, "Compressed
# chunks"): zstd level 1 per chunk compresses better than zlib -1/-6 and zstd -2/-3 at
# 1.4 GB/s, so it is the default (config.py) and the only pass. A second pass at level 6
# saved 8 % of the bytes of a dump for 1.1 CPU-s in 2.5 at L (337 MB); the larger default
# chunk (chunking.DEFAULT_CHUNK_SIZE) wins back most of it at level 1 for nothing
# (bench/dump_cost.py, docs/BENCH.md). A dictionary trained on the previous dump gained
# 4-13 % but would have to be stored and kept as long as any chunk needs it.
ZLIB = 0x01
ZSTD = 0x02
TAGS = {"zlib": ZLIB, "zstd": ZSTD}
ALGORITHMS = ("zstd", "zlib", "none")
DEFAULT = "zstd" if zstandard is not None else "zlib"
_LEVEL = {ZLIB: 6, ZSTD: 1}


def available(algorithm: str) -> bool:
    return algorithm != "zstd" or zstandard is not None


def encode(plain: bytes, algorithm: str) -> bytes:
    """The stored form of ``plain``: tagged and compressed, or ``plain`` itself when
    compression would not save at least a sixteenth (incompressible data stays raw)."""
    if algorithm == "none" or len(plain) < 64:
        return plain
    tag = TAGS.get(algorithm)
    if tag is None:
        raise ValueError(f"unknown compression {algorithm!r}")
    if tag == ZSTD:
        if zstandard is None:
            raise ValueError("compression zstd needs the zstandard package")
        packed = zstandard.ZstdCompressor(level=_LEVEL[tag]).compress(plain)
    else:
        packed = zlib.compress(plain, _LEVEL[tag])
    if 1 + len(packed) > len(plain) - len(plain) // 16:
        return plain
    return bytes((tag,)) + packed


def decode(stored: bytes, address: str, limit: int, hasher: Callable[[bytes], str] = sha256) -> bytes:
    """The verified plaintext of a stored chunk at ``address`` (``hasher`` names content).

    A tagged chunk may expand to ``limit`` bytes at most, the size its manifest claims,
    so a corrupt or hostile one cannot exhaust memory. Raises CorruptData, one line.
    """
    if hasher(stored) == address:
        return stored
    check = "sha256" if hasher is sha256 else "address (HMAC-SHA256)"
    if not stored or stored[0] not in _LEVEL:
        raise CorruptData(f"chunk {address[:16]}… fails its {check} check")
    plain = _inflate(stored[0], memoryview(stored)[1:], address, limit)
    if hasher(plain) != address:
        raise CorruptData(f"chunk {address[:16]}… fails its {check} check after decompression")
    return plain


def _inflate(tag: int, payload: memoryview, address: str, limit: int) -> bytes:
    what = f"chunk {address[:16]}…"
    if tag == ZLIB:
        d = zlib.decompressobj()
        try:
            plain = d.decompress(payload, limit + 1)
        except zlib.error:
            raise CorruptData(f"{what} is not valid zlib data") from None
        if len(plain) > limit or d.unconsumed_tail:
            raise CorruptData(f"{what} expands beyond the {limit} bytes it claims")
        if not d.eof or d.unused_data:
            raise CorruptData(f"{what} is truncated or has trailing bytes after its zlib stream")
        return plain
    if zstandard is None:
        raise CorruptData(f"{what} is zstd-compressed and the zstandard package is not installed")
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(payload, read_across_frames=False)
        parts, size = [], 0
        while part := reader.read(min(limit + 1 - size, 1 << 20) or 1):
            parts.append(part)
            size += len(part)
            if size > limit:
                raise CorruptData(f"{what} expands beyond the {limit} bytes it claims")
    except zstandard.ZstdError:
        raise CorruptData(f"{what} is not valid zstd data") from None
    return b"".join(parts)
