"""The manifest cut at content-defined points (manifest.Encoder): its pieces always join
into the one zlib stream readers expect, and one changed file rewrites two small pieces."""
from __future__ import annotations

import dataclasses
import hashlib

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
