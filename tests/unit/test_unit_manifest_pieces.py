"""The manifest cut at content-defined points (manifest.Encoder): its pieces always join
into the one zlib stream readers expect, and one changed file rewrites two small pieces."""
from __future__ import annotations

import dataclasses
import hashlib
import random
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from statesync.snapshot import manifest as mf
from statesync.snapshot import manifest_reader


def _entry(i: int, salt: str = "") -> mf.Entry:
    digest = hashlib.sha256(f"{i}{salt}".encode()).hexdigest()
    return mf.Entry(f"zone{i // 100:03d}/object{i:05d}.conf", mf.FILE, 0o644, 0, 0, 1_700_000_000_000_000_000 + i,
                    size=4096, sha256=digest, chunks=(digest,), user="root", group="root")


def _tree(n: int) -> list[mf.Entry]:
    return [_entry(i) for i in range(n)]


def test_a_small_manifest_is_one_piece_and_equals_encode():
    m = mf.Manifest(tuple(_tree(50)))
    assert mf.Encoder().pieces(m, 256 * 1024) == [mf.encode(m)]
    assert mf.Encoder().pieces(mf.Manifest(), 4096) == [mf.encode(mf.Manifest())]
    assert manifest_reader.decode(mf.encode(mf.Manifest())) == mf.Manifest()


def test_a_large_manifest_joins_into_the_stream_readers_decode_and_no_piece_is_too_big():
    m = mf.Manifest(tuple(_tree(10_000)))
    pieces = mf.Encoder().pieces(m, 64 * 1024)
    assert len(pieces) > 2 and all(len(p) <= 64 * 1024 for p in pieces)
    assert b"".join(pieces) == mf.encode(m)
    assert manifest_reader.decode(b"".join(pieces)) == m


def test_one_changed_file_rewrites_its_segment_and_the_end_only():
    entries = _tree(10_000)
    enc = mf.Encoder()
    before = enc.pieces(mf.Manifest(tuple(entries)), 256 * 1024)
    for k in (0, 4321, 9999):
        entries[k] = dataclasses.replace(_entry(k, salt="changed"), mtime_ns=entries[k].mtime_ns + 1)
        after = enc.pieces(mf.Manifest(tuple(entries)), 256 * 1024)
        assert len(set(after) - set(before)) <= 2, k
        assert manifest_reader.decode(b"".join(after)) == mf.Manifest(tuple(entries))
        before = after


def test_an_added_or_removed_path_rewrites_at_most_three_pieces():
    entries = _tree(10_000)
    before = mf.Encoder().pieces(mf.Manifest(tuple(entries)), 256 * 1024)
    added = mf.Encoder().pieces(mf.Manifest(tuple(entries + [_entry(20_000)])), 256 * 1024)
    removed = mf.Encoder().pieces(mf.Manifest(tuple(entries[:5000] + entries[5001:])), 256 * 1024)
    assert len(set(added) - set(before)) <= 3
    assert len(set(removed) - set(before)) <= 3


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 3000), max_piece=st.integers(16, 70_000), changed=st.lists(st.integers(0, 2999), max_size=5))
def test_pieces_always_decode_to_the_manifest(n, max_piece, changed):
    entries = _tree(n)
    enc = mf.Encoder()
    first = enc.pieces(mf.Manifest(tuple(entries)), max_piece)
    assert manifest_reader.decode(b"".join(first)) == mf.Manifest(tuple(entries))
    for k in changed:
        if k < n:
            entries[k] = _entry(k, salt="x")
    again = enc.pieces(mf.Manifest(tuple(entries)), max_piece)  # from the encoder's cache where unchanged
    assert all(len(p) <= max_piece for p in again)
    assert b"".join(again) == mf.encode(mf.Manifest(tuple(entries)))


def _api_tree() -> mf.Manifest:
    entries = [mf.Entry("api", "d", 0o750, 110, 118, 1, user="nagios", group="nagios")]
    for i in range(5000):
        d = hashlib.sha256(b"%d" % i).hexdigest()
        entries.append(mf.Entry(f"api/f{i:05d}.conf", "f", 0o640, 110, 118, 1_700_000_000_000_000_000 + i,
                                size=100 + i, sha256=d, chunks=(d,), user="nagios", group="nagios"))
    return mf.Manifest(tuple(entries), mf.Entry(".", "d", 0o755, 0, 0, 5))


def test_the_encoder_writes_the_same_bytes_as_before_it_stopped_keeping_each_segment_s_text():
    # Issue 26.4 changed what the encoder keeps between commits (an adler32 per segment, not its
    # text), not the format: these are the bytes the encoder of main wrote for the same two
    # commits, so a snapshot written before restores as it did, and one written now restores
    # with the readers before.
    encoder = mf.Encoder()
    first = encoder.pieces(_api_tree(), 64 * 1024)
    entries = list(_api_tree().entries)
    entries[2500] = mf.Entry("api/f02499.conf", "f", 0o600, 0, 0, 7, size=1, sha256=entries[2500].sha256,
                             chunks=(entries[2500].sha256,))
    second = encoder.pieces(mf.Manifest(tuple(entries), mf.Entry(".", "d", 0o755, 0, 0, 5)), 64 * 1024)
    assert hashlib.sha256(b"".join(first)).hexdigest() == "fcb5dfb32e04ad9a005435e8742263b4c53dc0b5e09a10e1184d40a6807e5c2c"
    assert hashlib.sha256(b"".join(second)).hexdigest() == "4457025e8905d1133168609e06215c69ac6f672693a17982e9d1d04e0f34278c"
    assert manifest_reader.decode(b"".join(second)).entries == tuple(entries)


def test_adler32_of_two_texts_joined_comes_from_their_own():
    rng = random.Random(7)
    for _ in range(500):
        a, b = rng.randbytes(rng.randrange(0, 3000)), rng.randbytes(rng.randrange(0, 200_000))
        assert mf.adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)
    a, b = b"\xff" * 100_000, b"\xff" * 99_999  # both sums near their modulus
    assert mf.adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)
