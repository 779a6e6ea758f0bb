"""Unit tests for statesync.snapshot (ids, records, pruning) and statesync.layout (KV keys). Pure."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statesync.errors import CorruptData
from statesync.snapshot.layout import SNAPSHOT_ID_RE, Layout, valid_node, valid_prefix, valid_sha256
from statesync.snapshot.record import RECORD_VERSION, Record, decode_record, new_id

FAST = settings(max_examples=100, deadline=None, database=None)

SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()
T0 = datetime(2026, 11, 23, 23, 44, 7, 123456, tzinfo=timezone.utc)
ID0 = "20261123T234407.123456Z-1a2b3c"


def record(**over) -> Record:
    fields = dict(id=ID0, node="web1", created="2026-11-23T23:44:07.123+00:00", files=3, dirs=2,
                  symlinks=1, bytes=1234, manifest_chunks=(SHA_A, SHA_B), manifest_sha256=SHA_A,
                  manifest_size=99, parent="", chunk_size=262144, meta={"reason": "test"})
    fields.update(over)
    return Record(**fields)


def record_dict(**over) -> dict:
    d = json.loads(record().encode())
    d.update(over)
    return d


def blob(d: object) -> bytes:
    return json.dumps(d).encode()


# === new_id ================================================================

def test_a_new_id_matches_the_snapshot_id_pattern():
    assert SNAPSHOT_ID_RE.match(new_id())
    assert SNAPSHOT_ID_RE.match(new_id(T0))


def test_a_new_id_starts_with_the_utc_time_to_the_microsecond():
    sid = new_id(T0)
    assert sid.startswith("20261123T234407.123456Z-")
    assert len(sid.rsplit("-", 1)[1]) == 6


def test_a_new_id_without_a_time_uses_the_current_utc_time():
    before = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    sid = new_id()
    after = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    assert before <= sid[:23] <= after


def test_two_ids_made_at_the_same_instant_differ():
    assert new_id(T0) != new_id(T0)


def test_ids_a_microsecond_apart_sort_in_time_order():
    assert new_id(T0) < new_id(T0 + timedelta(microseconds=1))


@FAST
@given(st.lists(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31),
                             timezones=st.just(timezone.utc)), min_size=2, max_size=8, unique=True))
def test_ids_sort_in_the_order_of_their_creation_times(times):
    ids = {t: new_id(t) for t in times}
    assert [ids[t] for t in sorted(times)] == sorted(ids.values())
    assert all(SNAPSHOT_ID_RE.match(i) for i in ids.values())


# === Record encode/decode ==================================================

def test_a_record_round_trips_through_encode_and_decode():
    rec = record()
    assert decode_record(rec.encode()) == rec


def test_a_decoded_record_keeps_manifest_chunks_as_a_tuple_in_order():
    rec = decode_record(record(manifest_chunks=(SHA_B, SHA_A, SHA_B)).encode())
    assert rec.manifest_chunks == (SHA_B, SHA_A, SHA_B)
    assert isinstance(rec.manifest_chunks, tuple)


def test_an_encoded_record_is_compact_sorted_json_with_version_one():
    raw = record().encode()
    d = json.loads(raw)
    assert d["v"] == RECORD_VERSION == 1
    assert list(d) == sorted(d)
    assert b" " not in raw


def test_encoding_a_record_is_deterministic():
    assert record().encode() == record().encode()


def test_defaults_for_parent_chunk_size_and_meta_round_trip():
    rec = Record(id=ID0, node="n", created="c", files=0, dirs=0, symlinks=0, bytes=0,
                 manifest_chunks=(SHA_A,), manifest_sha256=SHA_A, manifest_size=1)
    assert decode_record(rec.encode()) == rec
    assert (rec.parent, rec.chunk_size, rec.meta) == ("", 0, {})


def test_the_summary_shows_id_created_files_bytes_and_node():
    assert record().summary() == {"id": ID0, "created": "2026-11-23T23:44:07.123+00:00", "files": 3,
                                  "bytes": 1234, "node": "web1"}


_SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


@FAST
@given(node=_SAFE_TEXT, counts=st.lists(st.integers(0, 2**53), min_size=5, max_size=5),
       chunks=st.lists(st.binary(max_size=4).map(lambda b: hashlib.sha256(b).hexdigest()), min_size=1,
                       max_size=5),
       meta=st.dictionaries(_SAFE_TEXT, st.one_of(_SAFE_TEXT, st.integers(-(2**53), 2**53), st.booleans()),
                            max_size=4),
       parent=st.one_of(st.just(""), st.just(ID0)))
def test_any_valid_record_round_trips(node, counts, chunks, meta, parent):
    files, dirs, symlinks, nbytes, size = counts
    rec = Record(id=new_id(T0), node=node, created="x", files=files, dirs=dirs, symlinks=symlinks,
                 bytes=nbytes, manifest_chunks=tuple(chunks), manifest_sha256=chunks[0],
                 manifest_size=size, parent=parent, chunk_size=4096, meta=meta)
    assert decode_record(rec.encode()) == rec


@pytest.mark.parametrize("data", [b"", b"not json", b"{", b"\xff\xfe", b"[]", b"null", b"1", b'"rec"'])
def test_decode_rejects_data_that_is_not_a_json_object(data):
    with pytest.raises(CorruptData):
        decode_record(data)


@pytest.mark.parametrize("version", [None, 0, 2, "1", [1]])
def test_decode_rejects_a_missing_or_unknown_version(version):
    d = record_dict(v=version)
    if version is None:
        del d["v"]
    with pytest.raises(CorruptData):
        decode_record(blob(d))


@pytest.mark.parametrize("field", ["id", "node", "created", "files", "dirs", "symlinks", "bytes",
                                   "manifest_chunks", "manifest_sha256", "manifest_size"])
def test_decode_rejects_a_record_with_a_missing_field(field):
    d = record_dict()
    del d[field]
    with pytest.raises(CorruptData):
        decode_record(blob(d))


def test_decode_rejects_a_record_with_an_unknown_field():
    with pytest.raises(CorruptData):
        decode_record(blob(record_dict(colour="blue")))


@pytest.mark.parametrize("sid", ["", "latest", "20261123T234407Z-1a2b3c", "20261123T234407.123456Z",
                                 "20261123T234407.123456Z-1A2B3C", "20261123T234407.123456Z-1a2b3",
                                 "../20261123T234407.123456Z-1a2b3c", 5, None])
def test_decode_rejects_a_bad_snapshot_id(sid):
    with pytest.raises(CorruptData):
        decode_record(blob(record_dict(id=sid)))


@pytest.mark.parametrize("digest", ["", SHA_A.upper(), SHA_A[:-1], "z" * 64, None, 5])
def test_decode_rejects_a_bad_manifest_digest(digest):
    with pytest.raises(CorruptData):
        decode_record(blob(record_dict(manifest_sha256=digest)))


@pytest.mark.parametrize("chunks", [[], [SHA_A, "x"], [SHA_A.upper()], [5], SHA_A, 5, None])
def test_decode_rejects_a_bad_manifest_chunk_list(chunks):
    with pytest.raises(CorruptData):
        decode_record(blob(record_dict(manifest_chunks=chunks)))


@FAST
@given(st.binary(max_size=200))
def test_decoding_random_bytes_returns_a_record_or_raises_corrupt_data(data):
    try:
        rec = decode_record(data)
    except CorruptData:
        return
    assert isinstance(rec, Record)


def test_decode_rejects_deeply_nested_json_with_corrupt_data():
    with pytest.raises(CorruptData):
        decode_record(b"[" * 100_000)


# === layout =========================================================================

L = Layout("statesync/icinga2", "web1")


def test_layout_names_every_key_under_the_prefix_and_node():
    assert L.node_root == "statesync/icinga2/nodes/web1/"
    assert L.head == "statesync/icinga2/nodes/web1/head"
    assert L.snapshots == "statesync/icinga2/nodes/web1/snapshots/"
    assert L.snapshot(ID0) == f"statesync/icinga2/nodes/web1/snapshots/{ID0}"
    assert L.chunks == "statesync/icinga2/nodes/web1/chunks/"
    assert L.chunk(SHA_A) == f"statesync/icinga2/nodes/web1/chunks/{SHA_A}"
    assert L.gc == "statesync/icinga2/nodes/web1/gc"
    assert L.nodes == "statesync/icinga2/nodes/"
    assert L.ca == "statesync/icinga2/ca"


def test_for_node_keeps_the_prefix_and_changes_the_node():
    other = L.for_node("web2")
    assert other == Layout("statesync/icinga2", "web2")
    assert other.head == "statesync/icinga2/nodes/web2/head"
    assert other.ca == L.ca


@pytest.mark.parametrize("name", ["web1", "a", "0", "node-1.example_com", "A" * 253, "x.", "a..b"])
def test_valid_node_accepts_letters_digits_dots_underscores_and_dashes(name):
    assert valid_node(name)


@pytest.mark.parametrize("name", ["", ".", "..", "-a", ".a", "_a", "a/b", "a b", "A" * 254, "knöt",
                                  "a:b", "a\x00", "a\nb", "/"])
def test_valid_node_rejects_other_names(name):
    assert not valid_node(name)


@pytest.mark.parametrize("prefix", ["statesync/icinga2", "a", "a/b/c", "a.b-c_d/e", "x/.y"])
def test_valid_prefix_accepts_slash_separated_kv_names(prefix):
    assert valid_prefix(prefix)


@pytest.mark.parametrize("prefix", ["", "/", "/a", "a/", "a//b", "..", "a/..", "../a", "a/../b", "a b",
                                    "a/b c", "ä", "a\\b"])
def test_valid_prefix_rejects_other_prefixes(prefix):
    assert not valid_prefix(prefix)


def test_valid_sha256_accepts_64_lowercase_hex_digits():
    assert valid_sha256(SHA_A)
    assert valid_sha256("0" * 64)


@pytest.mark.parametrize("text", ["", SHA_A.upper(), SHA_A[:-1], SHA_A + "0", "g" * 64, " " + SHA_A[1:],
                                  SHA_A[:32] + "\n" + SHA_A[33:]])
def test_valid_sha256_rejects_anything_else(text):
    assert not valid_sha256(text)


@pytest.mark.parametrize("check,text", [(valid_sha256, SHA_A + "\n"), (valid_node, "web1\n"),
                                        (valid_prefix, "statesync/icinga2\n"),
                                        (SNAPSHOT_ID_RE.match, ID0 + "\n")])
def test_validators_reject_a_trailing_newline(check, text):
    assert not check(text)


def test_digest_of_chunk_key_returns_the_digest_of_this_nodes_chunk_key():
    assert L.digest_of_chunk_key(L.chunk(SHA_A)) == SHA_A


@pytest.mark.parametrize("key", [
    L.for_node("web2").chunk(SHA_A),
    L.for_node("web10").chunk(SHA_A),
    Layout("other", "web1").chunk(SHA_A),
    Layout("statesync/icinga", "web1").chunk(SHA_A),
    L.snapshot(ID0), L.head, L.gc, L.ca, L.chunks,
    L.chunk(SHA_A) + "/x", L.chunk(SHA_A.upper()), L.chunk(SHA_A[:-1]), L.chunk("not-a-digest"),
    "x" + L.chunk(SHA_A), L.chunk(SHA_A)[1:],
])
def test_digest_of_chunk_key_rejects_foreign_keys(key):
    assert L.digest_of_chunk_key(key) is None


def test_snapshot_id_of_key_returns_the_id_of_this_nodes_snapshot_key():
    assert L.snapshot_id_of_key(L.snapshot(ID0)) == ID0


@pytest.mark.parametrize("key", [
    L.for_node("web2").snapshot(ID0), L.for_node("web10").snapshot(ID0),
    Layout("other", "web1").snapshot(ID0), L.chunk(SHA_A), L.head, L.snapshots,
    L.snapshot(ID0) + "/x", L.snapshot("latest"), L.snapshot(ID0.upper()), "x" + L.snapshot(ID0),
])
def test_snapshot_id_of_key_rejects_foreign_keys(key):
    assert L.snapshot_id_of_key(key) is None


_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@FAST
@given(st.binary(max_size=8).map(lambda b: hashlib.sha256(b).hexdigest()),
       st.tuples(st.sampled_from(_ALNUM), st.text(_ALNUM + "._-", max_size=20)).map("".join))
def test_chunk_and_snapshot_keys_round_trip_for_any_valid_node(digest, node):
    layout = Layout("statesync/icinga2", node)
    sid = new_id(T0)
    assert layout.digest_of_chunk_key(layout.chunk(digest)) == digest
    assert layout.snapshot_id_of_key(layout.snapshot(sid)) == sid
    assert layout.digest_of_chunk_key(layout.snapshot(sid)) is None
    assert layout.snapshot_id_of_key(layout.chunk(digest)) is None


def test_nodes_with_snapshots_are_read_from_head_and_snapshot_keys_only():
    lay = Layout("p/q", "me")
    keys = ["p/q/ca", "p/q/nodes/b/head", "p/q/nodes/a/snapshots/" + ID0, "p/q/nodes/a/head",
            "p/q/nodes/c/chunks/" + SHA_A, "p/q/nodes/d/lock", "p/q/nodes/e/gc", "p/q/nodes/f/snapshots/junk",
            "p/q/nodes/g/head/extra", "p/qx/nodes/h/head", "other/nodes/i/head"]
    assert lay.nodes_with_snapshots(keys) == ["a", "b"]


def test_no_keys_means_no_nodes_with_snapshots():
    assert Layout("p", "me").nodes_with_snapshots([]) == []
