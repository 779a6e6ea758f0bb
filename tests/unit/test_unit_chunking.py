"""Unit tests for statesync.chunking: splitting, addressing, verifying, joining. Pure, no I/O."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statesync.errors import CorruptData
from statesync.snapshot import chunking
from statesync.snapshot.chunking import address, join, split, verify

FAST = settings(max_examples=200, deadline=None, database=None)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- sha256 and limits --------------------------------------------------------------

def test_sha256_is_the_lowercase_hex_digest():
    assert chunking.sha256(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_the_chunk_sizes_stay_below_consuls_value_limit():
    assert chunking.MAX_CHUNK_SIZE < 512 * 1024
    assert 0 < chunking.DEFAULT_CHUNK_SIZE <= chunking.MAX_CHUNK_SIZE


# --- split --------------------------------------------------------------------------

@pytest.mark.parametrize("length,size,expected", [
    (10, 3, [3, 3, 3, 1]),
    (9, 3, [3, 3, 3]),
    (1, 3, [1]),
    (3, 3, [3]),
    (4, 3, [3, 1]),
    (5, 100, [5]),
    (5, 1, [1, 1, 1, 1, 1]),
])
def test_split_cuts_data_into_pieces_of_at_most_the_chunk_size(length, size, expected):
    data = bytes(range(length))
    pieces = list(split(data, size))
    assert [len(p) for p in pieces] == expected
    assert b"".join(pieces) == data


def test_split_of_empty_input_yields_no_pieces():
    assert list(split(b"", 4)) == []


def test_split_yields_bytes_even_for_a_bytearray():
    pieces = list(split(bytearray(b"abcdef"), 4))
    assert pieces == [b"abcd", b"ef"]
    assert all(type(p) is bytes for p in pieces)


@pytest.mark.parametrize("size", [0, -1, -4096])
def test_split_rejects_a_chunk_size_that_is_not_positive(size):
    with pytest.raises(ValueError):
        list(split(b"abc", size))


# --- address ------------------------------------------------------------------------

def test_address_of_empty_input_has_no_chunks_and_the_sha256_of_nothing():
    digest, pieces = address(b"", 16)
    assert pieces == []
    assert digest == sha(b"")


@pytest.mark.parametrize("data", [b"x", b"hello", b"a" * 16])
def test_address_of_small_data_has_one_chunk_named_by_the_whole_digest(data):
    digest, pieces = address(data, 16)
    assert pieces == [(sha(data), data)]
    assert digest == sha(data)


def test_address_of_data_one_byte_over_the_chunk_size_has_two_chunks():
    data = b"0123456789abcdefX"
    digest, pieces = address(data, 16)
    assert [p for _, p in pieces] == [data[:16], b"X"]
    assert digest == sha(data)


def test_address_of_large_data_has_several_chunks_and_a_whole_digest_over_all_bytes():
    data = bytes(range(256)) * 40  # 10240 bytes
    digest, pieces = address(data, 4096)
    assert len(pieces) == 3
    assert digest == sha(data)
    assert digest not in {d for d, _ in pieces}
    for d, p in pieces:
        assert d == sha(p)
    assert b"".join(p for _, p in pieces) == data


def test_address_names_identical_pieces_with_the_same_digest():
    digest, pieces = address(b"ab" * 8, 2)
    assert len(pieces) == 8
    assert len({d for d, _ in pieces}) == 1


def test_address_rejects_a_chunk_size_that_is_not_positive():
    with pytest.raises(ValueError):
        address(b"abc", 0)


# --- verify -------------------------------------------------------------------------

def test_verify_returns_the_data_when_it_matches_its_digest():
    data = b"chunk"
    assert verify(sha(data), data) is data


@pytest.mark.parametrize("digest", [sha(b"other"), sha(b"chunk").upper(), "", "0" * 64, sha(b"chunk")[:-1]])
def test_verify_raises_corrupt_data_when_the_data_does_not_match(digest):
    with pytest.raises(CorruptData):
        verify(digest, b"chunk")


def test_verify_detects_a_single_flipped_bit():
    data = bytearray(b"\x00" * 100)
    digest = sha(bytes(data))
    data[50] ^= 1
    with pytest.raises(CorruptData):
        verify(digest, bytes(data))


# --- join ---------------------------------------------------------------------------

def test_join_concatenates_pieces_that_match_the_whole_digest():
    data = b"abcdefghij"
    assert join(sha(data), [b"abc", b"def", b"ghij"]) == data


def test_join_of_no_pieces_is_empty():
    assert join(sha(b""), []) == b""


def test_join_raises_corrupt_data_when_the_whole_digest_does_not_match():
    with pytest.raises(CorruptData):
        join(sha(b"abcdef"), [b"abc", b"xyz"])


def test_join_raises_corrupt_data_when_pieces_are_in_the_wrong_order():
    with pytest.raises(CorruptData):
        join(sha(b"abcdef"), [b"def", b"abc"])


def test_join_raises_corrupt_data_when_a_piece_is_missing():
    with pytest.raises(CorruptData):
        join(sha(b"abcdefghi"), [b"abc", b"ghi"])


def test_join_raises_corrupt_data_when_a_single_piece_does_not_match_the_whole_digest():
    with pytest.raises(CorruptData):
        join(sha(b"expected"), [b"something else"])


# --- properties ---------------------------------------------------------------------

@FAST
@given(st.binary(max_size=2048), st.integers(1, 300))
def test_joining_the_addressed_pieces_gives_back_the_data(data, size):
    digest, pieces = address(data, size)
    for d, p in pieces:
        assert verify(d, p) == p
    assert join(digest, [p for _, p in pieces]) == data


@FAST
@given(st.binary(max_size=2048), st.integers(1, 300))
def test_every_piece_but_the_last_is_exactly_the_chunk_size(data, size):
    digest, pieces = address(data, size)
    assert digest == sha(data)
    assert len(pieces) == -(-len(data) // size)
    lengths = [len(p) for _, p in pieces]
    assert all(n == size for n in lengths[:-1])
    assert all(0 < n <= size for n in lengths)
