"""The stored form of chunks (statesync/snapshot/codec.py) and the record version that announces it."""
from __future__ import annotations

import json
import os
import zlib

import pytest
import zstandard

from statesync.errors import CorruptData
from statesync.snapshot import codec
from statesync.snapshot.chunking import DEFAULT_CHUNK_SIZE, sha256
from statesync.snapshot.crypto import Sealer, generate_key
from statesync.snapshot.record import Record, decode_record

TEXT = b"".join(b'%d:{"name":"host-%05d!disk","type":"Service","state":0,"output":"DISK OK"},' % (70, i)
                for i in range(4000))


@pytest.mark.parametrize("algorithm,tag", [("zstd", codec.ZSTD), ("zlib", codec.ZLIB)])
def test_compressible_text_is_stored_tagged_smaller_and_reads_back(algorithm, tag):
    stored = codec.encode(TEXT, algorithm)
    assert stored[0] == tag and len(stored) * 10 < len(TEXT)
    assert codec.decode(stored, sha256(TEXT), len(TEXT)) == TEXT


def test_incompressible_or_tiny_data_and_compression_none_are_stored_raw():
    noise = os.urandom(256 * 1024)
    assert codec.encode(noise, "zstd") is noise
    assert codec.encode(noise, "zlib") is noise
    assert codec.encode(b"a" * 40, "zstd") == b"a" * 40
    assert codec.encode(TEXT, "none") is TEXT
    assert codec.decode(noise, sha256(noise), len(noise)) == noise


def test_a_raw_chunk_that_happens_to_start_with_a_tag_byte_reads_as_raw():
    raw = bytes((codec.ZSTD,)) + os.urandom(1000)
    assert codec.decode(raw, sha256(raw), len(raw)) == raw


def test_a_sealed_chunk_is_verified_by_its_keyed_address_after_decompression():
    sealer = Sealer(generate_key())
    address = sealer.address(TEXT)
    stored = codec.encode(TEXT, "zstd")
    blob = sealer.seal("n", address, stored)
    assert codec.decode(sealer.decrypt("n", address, blob), address, len(TEXT), sealer.address) == TEXT
    with pytest.raises(CorruptData, match="address"):
        codec.decode(stored, sealer.address(b"other"), len(TEXT), sealer.address)


@pytest.mark.parametrize("packed", [
    bytes((codec.ZSTD,)) + zstandard.ZstdCompressor().compress(bytes(64 << 20)),
    bytes((codec.ZLIB,)) + zlib.compress(bytes(64 << 20)),
], ids=["zstd", "zlib"])
def test_a_decompression_bomb_is_refused_at_the_size_the_chunk_claims(packed):
    with pytest.raises(CorruptData, match="expands beyond the 262144 bytes") as info:
        codec.decode(packed, sha256(b"x"), 256 * 1024)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("algorithm", ["zstd", "zlib"])
def test_a_flipped_bit_a_truncation_or_an_unknown_tag_gives_one_line_of_corrupt_data(algorithm):
    stored = codec.encode(TEXT, algorithm)
    flipped = bytearray(stored)
    flipped[len(stored) // 2:len(stored) // 2 + 32] = bytes(32)
    for bad in (bytes(flipped), stored[:-7], b"\x7f" + stored[1:], b""):
        with pytest.raises(CorruptData, match=r"^chunk [0-9a-f]{16}… (fails its sha256 check|is not valid|is truncated|expands beyond)") as info:
            codec.decode(bad, sha256(TEXT), len(TEXT))
        assert "\n" not in str(info.value)


def _record(**kw) -> Record:
    return Record(id="20261123T234407.123456Z-1a2b3c", node="n", created="t", files=1, dirs=0,
                           symlinks=0, bytes=3, manifest_chunks=("a" * 64,), manifest_sha256="b" * 64,
                           manifest_size=9, **kw)


def test_a_record_without_compression_is_written_exactly_as_version_1_wrote_it():
    doc = json.loads(_record().encode())
    assert doc["v"] == 1 and "compression" not in doc
    assert decode_record(_record().encode()) == _record()


def test_a_record_with_compressed_chunks_is_version_2_and_a_mismatched_version_is_refused():
    rec = _record(compression="zstd")
    doc = json.loads(rec.encode())
    assert doc["v"] == 2 and doc["compression"] == "zstd"
    assert decode_record(rec.encode()) == rec
    for bad in ({**doc, "v": 1}, {k: v for k, v in doc.items() if k != "compression"}, {**doc, "v": 3}):
        with pytest.raises(CorruptData):
            decode_record(json.dumps(bad).encode())


def test_icinga_state_at_the_default_chunk_size_beats_a_second_pass_over_smaller_chunks():
    # The level-6 second pass over 256 KiB chunks cost 1.1 CPU-s of 2.5 per dump at L for 8 % of
    # the bytes; one pass at level 1 over the larger default chunk comes within 2 % of it.
    import io
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import icinga_state
    buf = io.BytesIO()
    icinga_state.write(buf, 300, 10, seed=3, tick=2)
    data = buf.getvalue()
    size = DEFAULT_CHUNK_SIZE
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    small = [data[i:i + 262144] for i in range(0, len(data), 262144)]
    one_pass_small = sum(1 + len(zstandard.ZstdCompressor(level=1).compress(c)) for c in small)
    stored = [codec.encode(c, "zstd") for c in chunks]
    assert sum(map(len, stored)) * 1.04 < one_pass_small
    assert len(data) / sum(map(len, stored)) > 15
    assert [codec.decode(s, sha256(c), len(c)) for s, c in zip(stored, chunks, strict=True)] == chunks


def test_every_chunk_is_compressed_once_at_level_1(monkeypatch):
    import io
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import icinga_state
    buf = io.BytesIO()
    icinga_state.write(buf, 30, 10, seed=3, tick=2)
    levels = []
    real = zstandard.ZstdCompressor
    monkeypatch.setattr(zstandard, "ZstdCompressor", lambda level: levels.append(level) or real(level=level))
    assert codec.encode(os.urandom(262144), "zstd") is not None
    assert codec.encode(buf.getvalue()[:DEFAULT_CHUNK_SIZE], "zstd")[0] == codec.ZSTD
    assert levels == [1, 1]
